#!/usr/bin/env bash
# artifactory-mirror: one entry point for operators, the demo and the tests.
#   ./run.sh up      run the mirror (stock registry + mitmdump with the addon) in the foreground
#   ./run.sh web     the same with mitmweb for inspecting flows (loopback, password protected)
#   ./run.sh check   validate the configuration ($MIRROR_CONFIG or ./mirror.yaml) and exit
#   ./run.sh status  a short summary of the running mirror (its stats page: http://<rewriter.listen>/_mirror/stats)
#   ./run.sh evictions  what the next expiry pass would remove (mirror.max_age, mirror.max_bytes); changes nothing
#   ./run.sh warm IMAGE... | -f FILE   pull images (every platform) into the running mirror before a deploy
#   ./run.sh clients  docker's, containerd's, Kubernetes', podman's and skopeo's configuration for this mirror
#   ./run.sh demo    the embedded demo: local Artifactory-like upstream, cold and warm pulls, a table
#   ./run.sh test    lint, then the test suite (pytest arguments may follow)
#   ./run.sh test-unit  lint and the unit tests only: the contributor's fast loop
#   ./run.sh bench   the benchmark: direct, the seed's design, this mirror (1; 2 on a folder, on a bucket), nginx; WAN + loopback
#   ./run.sh bench-load  50 concurrent clients (upstream steady, flapping, down); 200 distinct cold layers at once
#   ./run.sh bench-storage  a company's pulls under mirror.max_bytes, 5 runs: storage against the cap, references, re-fetches
#   ./run.sh bench-cpu   CPU seconds per process of a cold pull, against a direct one (loopback)
#   ./run.sh bench-descriptors  warm blob requests/s without the registry's descriptor cache, and with it
#   ./run.sh bench-clients  docker, containerd and podman: cold and warm through the mirror, and direct (root)
#   ./run.sh bench-link-race  two replicas with cache.prefetch on, a bucket then a folder: 20 x 10 pulls, then 100 at once
#   ./run.sh bench-access  per-user access: token answers cold and cached, warm pulls against an open mirror
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
DEBIAN_PACKAGES=(docker-registry skopeo)

die() { echo "run.sh: $*" >&2; exit 2; }

find_python() {
  local candidates=(python3.13 python3.12 python3)
  local c
  for c in "${candidates[@]}" "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python /root/.pyenv/versions/3.1[2-9]*/bin/python \
           /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

ensure_debian_packages() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "run.sh: installing Debian packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # the docker-registry package enables a system service on :5000; the mirror runs its own
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry redis-server prometheus >/dev/null 2>&1 || true; fi
  else
    die "missing Debian packages; run: sudo apt-get install -y ${missing[*]}"
  fi
}

ensure_venv() {  # $1: the package's extras to install with it (test, bench), none for the operator's commands
  local py spec="$ROOT${1:+[$1]}" stamp="$VENV/.installed${1:+-$1}"
  if [ ! -x "$VENV/bin/python" ]; then
    py="$(find_python)" || die "mitmproxy 12 needs Python >= 3.12 and none was found; install one, e.g.
  pyenv install 3.12 (then re-run), or: apt-get install python3.12 python3.12-venv on a distribution that has it"
    echo "run.sh: creating $VENV with $py"
    "$py" -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/constraints.txt" -nt "$stamp" ]; then
    echo "run.sh: installing the package and its dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/constraints.txt" \
      -e "$spec" 2>&1 | { grep -v "^WARNING: Location" || true; }
    touch "$stamp"
  fi
}

lint() {
  (cd "$ROOT" && "$VENV/bin/ruff" check --quiet .) || die "ruff found the problems above"
  # the package's types; settings in pyproject.toml's [tool.mypy]
  (cd "$ROOT" && "$VENV/bin/python" -m mypy --no-error-summary) || die "mypy found the type errors above"
}

# devtools/, bench/ and tests/ import from the checkout; the package is installed in .venv (editable)
run_python() { cd "$ROOT" && PYTHONPATH="$ROOT" exec "$VENV/bin/python" "$@"; }
mirror_command() { exec "$VENV/bin/artifactory-mirror" "$@"; }

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  up|web)
    # the stock registry: Debian's package, or a `registry` binary already on PATH (as in the registry:2 image)
    command -v docker-registry >/dev/null 2>&1 || command -v registry >/dev/null 2>&1 ||
      ensure_debian_packages docker-registry
    ensure_venv
    mirror_command "$cmd" "$@" ;;
  check|status|evictions|warm|clients|--version)  # only the configuration, the storage or the running mirror: no OS package
    ensure_venv
    mirror_command "$cmd" "$@" ;;
  demo)
    ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
    ensure_venv
    run_python -m devtools.demo "$@" ;;
  test)
    # chromium: the stats page is checked in a real browser; redis-server: the scale-out tests;
    # iproute2 and ethtool: the MTU-1500 path to the upstream; docker-compose: validating the compose file;
    # containerd, podman and docker.io: the clients that pull through the mirror; prometheus: promtool checks
    # the alert rules and the dashboard's queries (monitoring/)
    ensure_debian_packages "${DEBIAN_PACKAGES[@]}" chromium redis-server iproute2 ethtool docker-compose \
      containerd podman docker.io prometheus
    ensure_venv test
    lint
    run_python -m pytest "$@" ;;
  test-unit)
    ensure_venv test
    lint
    run_python -m pytest tests/unit "$@" ;;
  bench)
    ensure_debian_packages "${DEBIAN_PACKAGES[@]}" haproxy nginx iproute2 redis-server
    ensure_venv bench
    run_python -m bench.bench "$@" ;;
  bench-cpu)
    ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
    ensure_venv
    run_python -m bench.cold_cpu "$@" ;;
  bench-descriptors)
    ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
    ensure_venv
    run_python bench/descriptor_cache.py "$@" ;;
  bench-clients)
    ensure_debian_packages "${DEBIAN_PACKAGES[@]}" iproute2 ethtool containerd podman docker.io
    ensure_venv
    run_python bench/clients.py "$@" ;;
  bench-load)
    ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
    ensure_venv
    run_python -m bench.load "$@" ;;
  bench-storage)
    ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
    ensure_venv bench
    run_python -m bench.storage_workload "$@" ;;
  bench-link-race)
    ensure_debian_packages "${DEBIAN_PACKAGES[@]}" redis-server
    ensure_venv bench
    run_python -m bench.link_race "$@" ;;
  bench-access)
    ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
    ensure_venv bench
    run_python -m bench.access "$@" ;;
  *)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] || [ "$cmd" = help ] || [ "$cmd" = -h ] || exit 2 ;;
esac
