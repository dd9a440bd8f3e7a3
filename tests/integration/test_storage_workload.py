"""A company-shaped workload under a small storage cap (devtools/storage_workload.py), scaled down to a tenth:
bases of 4, 2.5 and 1 MiB, 30 applications on them in 13 repositories, the cap at 40% of the distinct bytes, 80
pulls in 4 rounds at 3, 8, 1 and 6 at once. `./run.sh bench-storage` runs it at full size, several times.

What must hold whatever the machine's speed: every pull byte-identical; at the end of each round (pulls quiesced,
then the due pass waited for) no link names missing data and no image in storage lacks a layer link (but for
registry 2.8's own gap: one whose data is stored, below); and the
storage (blob data and partial uploads) within the bound at every sample and at the end of every pass: the cap,
plus the images being pulled (in progress, or ended since the start of the last pass that has finished, less
the seconds before it in which a pass keeps the blobs just answered). Data a pass has set aside counts against
the bound at its end, not during its seconds of grace, when a pull may store a blob anew while the old copy
waits aside. No blob in storage fails its digest at the end.

On a folder. On a bucket the same workload runs in `./run.sh bench-storage --bucket` (watched through the store's
own listing, `BucketView`), not here: a sample there can exceed the bound by up to 1 MiB just after a pass ends
(seen once in the suite's run on a fresh clone), not explained yet."""
from __future__ import annotations

from devtools.storage_workload import (
    STORED_UNLINKED,
    FolderView,
    Shape,
    Target,
    Workload,
    build_catalog,
    seed_upstream,
)
from registry_mirror.stats.views import JSON_PATH

from .conftest import credentials_of

SHAPE = Shape(scale=0.1, pulls=80, rounds=4, at_once=(3, 8, 1, 6), seed=3)


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def test_a_company_workload_stays_within_the_cap_and_breaks_no_reference(upstream, mirror_factory, layer_cache,
                                                                        tmp_path):
    catalog = build_catalog(layer_cache, SHAPE)
    seed_upstream(upstream.registry_url, catalog)
    mirror = mirror_factory(credentials_of(upstream), dump=False, mirror_keys={"max_bytes": catalog.max_bytes})
    view = FolderView(mirror.storage)
    target = Target(mirror.address, mirror.trust, view, mirror.rewriter + JSON_PATH, upstream)
    lines: list[str] = []
    figures = Workload(catalog, target, tmp_path / "pulls", log=lines.append).run().figures()
    print("\n".join(lines))  # shown with a failure
    print(f"{figures['samples']} samples, max {mib(figures['sample_max_bytes'])} (cap {mib(figures['max_bytes'])}); "
          f"{figures['passes']} pass ends, max {mib(figures['pass_end_max'])}; requests a pass makes: max "
          f"{figures['pass_requests_max']}, p50 {figures['pass_requests_p50']}, last {figures['pass_requests_last']}")

    assert figures["pulls"] == SHAPE.pulls
    assert figures["failures"] == 0, figures["first_failure"]
    assert figures["non_identical"] == 0, figures["first_mismatch"]
    assert figures["rounds_not_quiesced"] == 0
    assert figures["due_passes_missing"] == 0, "a pass was due (storage over the cap) and none came"
    # registry 2.8 keeps its in-flight blobs by digest, not by repository: a second repository asking for a shared
    # layer while another's fetch of it runs is streamed the bytes and never gets the link; its next pull asks the
    # addon, which serves the stored data (no WAN). That gap alone is the registry's, and tolerated here.
    assert {r["round"]: [b for b in r["broken"] if not b.endswith(STORED_UNLINKED)]
            for r in figures["rounds"] if any(not b.endswith(STORED_UNLINKED) for b in r["broken"])} == {}
    assert figures["passes"] >= 1  # the cap was crossed while the storage was watched
    assert figures["samples_over_bound"] == 0, (
        f"{figures['samples_over_bound']} of {figures['samples']} samples over the bound, by up to "
        f"{mib(figures['sample_max_over_bound'])} (cap {mib(figures['max_bytes'])}); the worst: "
        f"{figures['samples_over_bound_worst']}")
    assert figures["pass_ends_over_bound"] == 0, (
        f"{figures['pass_ends_over_bound']} of {figures['passes']} pass ends over the bound, by up to "
        f"{mib(figures['pass_end_max_over_bound'])}: {[mib(b) for b in figures['pass_end_bytes']]}")
    assert view.corrupt_blobs() == 0
