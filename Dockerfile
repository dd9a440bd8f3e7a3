# artifactory-mirror in one image: the stock registry (Debian's docker-registry, the code of registry:2) and
# mitmdump with the addon, supervised by `artifactory-mirror up` exactly as on a host.
#   docker compose up -d            (docker-compose.yml builds this and mounts mirror.yaml, data/, certs/)
FROM python:3.12-slim-bookworm

ARG DEBIAN_FRONTEND=noninteractive
# the version the test suite runs against
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker-registry=2.8.2+ds1-1 \
 && rm -rf /var/lib/apt/lists/*

# the package and nothing else: no tests, no devtools; dependencies at the versions constraints.txt pins
COPY pyproject.toml constraints.txt README.md /src/
COPY addons/registry_mirror /src/addons/registry_mirror
RUN pip install --no-cache-dir --disable-pip-version-check -c /src/constraints.txt /src \
 && rm -rf /src

# a fixed uid, so the host can own ./data and ./certs for it (see docker-compose.yml)
RUN useradd --system --uid 10001 --create-home --home-dir /home/mirror --shell /usr/sbin/nologin mirror \
 && install -d -o mirror -g mirror /config
USER mirror
WORKDIR /config
ENV MIRROR_CONFIG=/config/mirror.yaml PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 5000
# healthy: the addon answers its stats at the configured rewriter.listen (an open port is not enough: mitmproxy
# listens before it loads the addon); `up` exits, and the container stops, when either process dies
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s CMD ["artifactory-mirror", "status"]
ENTRYPOINT ["artifactory-mirror"]
CMD ["up", "--log-dir", "/config/data/logs"]
