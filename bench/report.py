"""The bench's results: medians with every sample, the targets, the capacity sweep; printed and saved as
bench/results/<site>.md, .json and .png (the options that change what ran in the names: <site>-prefetch-quick,
<site>-quick-replicas+replicas-bucket for a run of some designs only, and a --tag last)."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from bench.designs import DESIGNS, DIRECT, MIRROR, NGINX

CAPACITY_SHARE = 0.90  # the link's share a capacity figure must keep


def samples(result: dict, design: str, scenario: str, key: str = "wall_s") -> list[float]:
    return [r[scenario][key] for r in result["runs"] if r["design"] == design and scenario in r]


def median(result: dict, design: str, scenario: str, key: str = "wall_s") -> float | None:
    values = samples(result, design, scenario, key)
    return statistics.median(values) if values else None


def cell(result: dict, design: str, scenario: str) -> str:
    """`median s (x floor) [every sample]`."""
    values = samples(result, design, scenario)
    if not values:
        return "-"
    mid, floor = statistics.median(values), result["floor_s"]
    text = f"{mid:.2f} s" + (f" ({mid / floor:.2f}x floor)" if floor and scenario != "warm" else "")
    return text + (f" [{', '.join(f'{v:.2f}' for v in values)}]" if len(values) > 1 else "")


def targets(result: dict) -> list[tuple[str, float, float]]:
    """(what, measured ratio, the bound it must not exceed), for those whose designs ran."""
    m = result["machines"]
    mirror_cold, nginx_cold = median(result, MIRROR, "cold"), median(result, NGINX, "cold")
    mirror_one, direct_one = median(result, MIRROR, "single"), median(result, DIRECT, "single")
    if result["floor_s"]:
        wanted = [(f"{m} at once, cold: mirror / link floor", mirror_cold, result["floor_s"], 1.10),
                  (f"{m} at once, cold: mirror / nginx cache", mirror_cold, nginx_cold, 0.85),
                  ("one cold pull: mirror / direct", mirror_one, direct_one, 1.05)]
    else:
        wanted = [("one cold pull: mirror / direct (TLS)", mirror_one, direct_one, 1.25),
                  (f"{m} at once, cold: mirror / nginx cache", mirror_cold, nginx_cold, 1.00)]
    return [(what, value / against, bound) for what, value, against, bound in wanted if value and against]


def where_it_went(result: dict) -> list[str]:
    """Per design, the cold deploy's CPU by process and, on the WAN, when its bytes crossed the link."""
    m, wan = result["machines"], bool(result["floor_s"])
    lines = ["", f"Where the {m}-at-once cold deploy's time went (medians): CPU seconds of the design's processes"
             + ("; on the WAN, seconds from the start to the first and the last byte on the link, the link's use "
                "between (2% to 98% of the bytes: mean, slowest whole second), and the tail from the last byte "
                "on the link to the last machine done:" if wan else ":"), "",
             "| design | CPU seconds by process |" + (" first byte | last byte | link used | slowest second | tail |"
                                                     if wan else ""),
             "|---|---|" + ("---|---|---|---|---|" if wan else "")]
    for design in DESIGNS:
        runs = [r["cold"] for r in result["runs"] if r["design"] == design]
        if not runs:
            continue
        names = list(runs[0]["cpu_parts_s"])
        cpu = ", ".join(f"{n} {statistics.median(r['cpu_parts_s'][n] for r in runs):.2f}" for n in names) or "-"
        row = f"| {design} | {cpu} |"
        if wan:
            def mid(key: str, form: str, runs=runs) -> str:
                values = [r["link"][key] for r in runs if r["link"][key] is not None]
                return format(statistics.median(values), form) if values else "-"
            tail = statistics.median(r["wall_s"] - (r["link"]["last_byte_s"] or 0) for r in runs)
            row += (f" {mid('first_byte_s', '.2f')} s | {mid('last_byte_s', '.2f')} s | {mid('mean', '.0%')} | "
                    f"{mid('lowest_second', '.0%')} | {tail:.2f} s |")
        lines.append(row)
    return lines


def capacity_lines(result: dict) -> list[str]:
    rows = result["capacity"]
    if not rows:
        return []
    kept = [r["machines"] for r in rows if (r["link"]["mean"] or 0) >= CAPACITY_SHARE]
    lines = ["", f"Capacity on the WAN: the mirror serving n cold pulls at once, the link's use sampled every "
             f"0.05 s from 2% to 98% of the bytes (its frames, headers included, against the {result['rate']} "
             f"rate):", "",
             "| cold pulls at once | wall time | bytes on the WAN | link used, mean | slowest whole second | "
             "last byte on the link |", "|---|---|---|---|---|---|"]
    for r in rows:
        link = r["link"]
        lowest = f"{link['lowest_second']:.0%}" if link["lowest_second"] is not None else "-"
        lines.append(f"| {r['machines']} | {r['wall_s']:.2f} s ({r['wall_s'] / result['floor_s']:.2f}x floor) | "
                     f"{r['wan_x_image']:.2f}x image | {link['mean']:.0%} | {lowest} | {link['last_byte_s']:.2f} s |")
    most = max(kept) if kept else None
    lines += ["", f"The link stays at >= {CAPACITY_SHARE:.0%} of its rate with up to "
              f"{most} concurrent cold pulls (of those tried)." if most else
              f"The link fell below {CAPACITY_SHARE:.0%} of its rate at every count tried."]
    return lines


def markdown(result: dict, command: str) -> str:
    m, size, floor = result["machines"], result["image_bytes"], result["floor_s"]
    site = (f"a {result['rate']} WAN link (veth + tc tbf, two network namespaces, MTU 1500)" if floor
            else "loopback")
    lines = [f"# {m} machines pull the {size / 1e6:.1f} MB image over {site}", "",
             f"Measured {time.strftime('%Y-%m-%d')} with `{command}` on a 2-core machine: {result['rounds']} "
             f"round(s), the designs' order alternating, a `sync` before each timed pull; every design serves "
             f"TLS to the machines and reaches the upstream over TLS. Medians, every sample in brackets."
             + (f" The link's floor for the image (its bytes over the link rate): **{floor:.2f} s**." if floor else ""),
             "", f"| design | one cold pull | {m} at once, cold | {m} at once, warm | bytes on the WAN, cold "
             f"| CPU s per GB served, cold / warm | addon peak RSS |", "|---|---|---|---|---|---|---|"]
    for design in DESIGNS:
        if not samples(result, design, "cold"):
            continue
        wan = median(result, design, "cold", "wan_x_image")
        cpu = "-" if design == DIRECT else " / ".join(
            f"{median(result, design, s, 'cpu_s_per_gb'):.2f}" for s in ("cold", "warm"))
        peaks = [r["addon_peak_mb"] for r in result["runs"] if r["design"] == design and r["addon_peak_mb"]]
        lines.append(f"| {design} | {cell(result, design, 'single')} | {cell(result, design, 'cold')} | "
                     f"{cell(result, design, 'warm')} | {wan:.2f}x image | {cpu} | "
                     f"{f'{max(peaks):.0f} MB' if peaks else '-'} |")
    lines += ["", "| target | measured | bound | met |", "|---|---|---|---|"]
    lines += [f"| {what} | {value:.2f}x | <= {bound:.2f}x | {'yes' if value <= bound else '**no**'} |"
              for what, value, bound in targets(result)]
    lines += where_it_went(result)
    lines += capacity_lines(result)
    warm = result["warm_against_local"]
    mirror_warm, local = statistics.median(warm["mirror_warm_s"]), statistics.median(warm["local_registry_s"])
    lines += ["", f"One machine's warm pull of the other image through the mirror (tag cached) taking turns with a "
              f"pull from a plain local registry holding the same image: mirror {mirror_warm:.2f} s "
              f"{warm['mirror_warm_s']}, local {local:.2f} s {warm['local_registry_s']}: "
              f"{mirror_warm / local:.2f}x; {warm['upstream_requests']} upstream requests during the warm pulls."]
    return "\n".join(lines) + "\n"


def result_name(site: str, quick: bool, prefetch: bool, designs: tuple[str, ...] = (), tag: str = "") -> str:
    """The result files' name: the site, then what narrowed or changed the run (`designs`: the slugs run when
    not every design ran), so no such run replaces the full one's files."""
    options = ("-prefetch" if prefetch else "") + ("-quick" if quick else "")
    return site + options + (f"-{'+'.join(designs)}" if designs else "") + (f"-{tag}" if tag else "")


def save(result: dict, results_dir: Path, quick: bool, prefetch: bool, designs: tuple[str, ...] = (),
         tag: str = "") -> None:
    """`designs`: the designs' slugs when only some ran (empty: all of them); `tag`: a name of the run's own."""
    options = ((" --prefetch" if prefetch else "") + (" --quick" if quick else "")
               + (f" --designs {','.join(designs)}" if designs else "") + (f" --tag {tag}" if tag else ""))
    name = result_name(result["site"], quick, prefetch, designs, tag)
    text = markdown(result, f"./run.sh bench{options} --only {result['site']}")
    (results_dir / f"{name}.md").write_text(text)
    (results_dir / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(text)
    chart(result, results_dir / f"{name}.png")


def chart(result: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib missing, no chart (./run.sh bench installs it)")
        return
    present = [d for d in DESIGNS if samples(result, d, "cold")]
    labels = [d.replace(" (", "\n(").replace(", ", ",\n") for d in present]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    panels = ((axes[0], (("single", "one cold pull"),), "one machine's cold pull (s)"),
              (axes[1], (("cold", "cold"), ("warm", "warm")), f"{result['machines']} machines at once (s)"))
    for ax, scenarios, title in panels:
        width = 0.8 / len(scenarios)
        for j, (scenario, label) in enumerate(scenarios):
            shown = [(i, d) for i, d in enumerate(present) if samples(result, d, scenario)]  # direct: no warm
            xs = [i + (j - (len(scenarios) - 1) / 2) * width for i, _ in shown]
            bars = ax.bar(xs, [median(result, d, scenario) for _, d in shown], width, label=label)
            ax.bar_label(bars, fmt="%.1f", fontsize=8)
            for x, (_, d) in zip(xs, shown, strict=True):
                points = samples(result, d, scenario)
                ax.plot([x] * len(points), points, "k.", markersize=3)
        if result["floor_s"]:
            ax.axhline(result["floor_s"], color="grey", linestyle="--", linewidth=1)
            ax.text(len(present) - 0.5, result["floor_s"], f"link floor {result['floor_s']:.1f} s", fontsize=7,
                    ha="right", va="bottom", color="grey")
        ax.set_xticks(range(len(present)), labels, fontsize=7)
        ax.set_title(title, fontsize=10)
        if len(scenarios) > 1:
            ax.legend(fontsize=8)
    where = f"a {result['rate']} WAN (tc tbf)" if result["floor_s"] else "loopback"
    fig.suptitle(f"the {result['image_bytes'] / 1e6:.0f} MB image over {where}, TLS everywhere; "
                 f"medians of {result['rounds']} round(s), dots: samples", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"bench: chart {path}")

