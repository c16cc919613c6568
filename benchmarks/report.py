"""Human-readable views of a bench document: a markdown table and a PNG.

Both state the conditions (machine, threads, bundle, frames, runs) next to
the numbers, as the project's benchmark convention asks.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

COLUMNS = [  # (header, metric, scale, format)
    ("TTFA p50 ms", "ttfa_p50", 1e3, "{:.1f}"), ("TTFA p95 ms", "ttfa_p95", 1e3, "{:.1f}"),
    ("frame p50 ms", "frame_p50", 1e3, "{:.2f}"), ("frame p99 ms", "frame_p99", 1e3, "{:.2f}"),
    ("max gap ms", "gap_max", 1e3, "{:.1f}"), ("underruns", "underruns", 1, "{:.0f}"),
    ("stall ms", "stall", 1e3, "{:.1f}"), ("RTF", "rtf", 1, "{:.3f}"), ("x RT", "x_real_time", 1, "{:.1f}"),
    ("agg x RT", "agg_x_real_time", 1, "{:.1f}"), ("peak RSS MiB", "peak_rss", 1, "{:.0f}"),
    ("core-s / audio-s", "core_s_per_audio_s", 1, "{:.3f}"), ("codes / audio-s", "codes_per_audio_s", 1, "{:.0f}"),
]
RATIO_COLUMNS = ["ttfa_p50", "ttfa_p95", "frame_p50", "frame_p99", "agg_x_real_time", "core_s_per_audio_s",
                 "peak_rss"]


def _fmt(v, scale: float = 1, fmt: str = "{:.2f}") -> str:
    return "n/a" if v is None or math.isnan(v) else fmt.format(v * scale)


def conditions(meta: dict) -> str:
    """One line: where and how the numbers were measured."""
    return (f"bundle `{meta['bundle_config']}` ({meta['bundle_hash'][:12]}), {meta['frames']} frames "
            f"({meta['audio_s_per_stream']:.2f} s of audio) per stream, seed {meta['seed']}; {meta['cpu']}, "
            f"{meta['cores']} cores, {meta['threads']} threads; {meta['warmup']} warm-up + {meta['runs']} timed "
            f"runs per row, engines interleaved; commit {str(meta.get('commit'))[:10]}, {meta['date']}")


def markdown(doc: dict) -> str:
    """The rows, the speedups and (if measured) step time vs position, as markdown tables."""
    meta, rows = doc["meta"], doc["rows"]
    out = [f"**Cadenza bench** - {conditions(meta)}", *_load_note(meta), "",
           "| engine | streams | " + " | ".join(c[0] for c in COLUMNS) + " |",
           "| --- | ---: | " + " | ".join("---:" for _ in COLUMNS) + " |"]
    for r in (r for r in rows if r["kind"] == "streams"):
        cells = [_fmt(r["metrics"].get(m), s, f) for _, m, s, f in COLUMNS]
        out.append(f"| {r['engine']} | {r['streams']} | " + " | ".join(cells) + " |")
    out += ["", ("Speedup of `ort` (Cadenza) over each baseline (> 1 = Cadenza better; "
                 "baseline / ort for times and costs, ort / baseline for x real time):"), "",
            "| ratio | streams | " + " | ".join(RATIO_COLUMNS) + " |",
            "| --- | ---: | " + " | ".join("---:" for _ in RATIO_COLUMNS) + " |"]
    values = doc["ratios"]["values"]
    for pair, n in _pairs(values):
        cells = [_fmt(values.get(f"{pair}.{m}@{n}"), 1, "{:.2f}x") for m in RATIO_COLUMNS]
        out.append(f"| {pair} | {n} | " + " | ".join(cells) + " |")
    out += _positions_table(rows)
    out += floor_lines(doc.get("floor"))
    if doc.get("peers"):
        from .peers import markdown as peers_markdown

        out += peers_markdown(doc["peers"])
    return "\n".join(out) + "\n"


def floor_lines(floor: dict | None) -> list[str]:
    if not floor:
        return []
    bw = floor["bandwidth"]
    return ["", (f"Memory floor of a backbone step: {floor['step_weight_bytes'] / 1e6:.1f} MB of weights / "
                 f"{bw['best_gb_s']:.1f} GB/s (best GEMV read bandwidth; median {bw['median_gb_s']:.1f} GB/s, "
                 f"{bw['matrix_bytes'] / 2**20:.0f} MiB fp32 matrix, {bw['threads']} thread(s)) = "
                 f"**{floor['step_floor_ms']:.2f} ms** ({floor['step_floor_ms_at_median_bandwidth']:.2f} ms at the "
                 "median bandwidth); KV-cache reads come on top.")]


def _load_note(meta: dict) -> list[str]:
    load = (meta.get("load_avg_at_start") or [0])[0]
    if load > 0.5 * (meta.get("cores") or 1):
        return ["", (f"Note: the machine was busy (load average {load:.1f} on {meta['cores']} cores at the start); "
                     "expect noisy numbers, and compare ratios rather than absolute times.")]
    return []


def _pairs(values: dict) -> list[tuple[str, int]]:
    seen = []
    for key in values:
        head, n = key.rsplit("@", 1)
        pair = head.rsplit(".", 1)[0]  # an engine name may hold a dot (llama.cpp); a metric never does
        item = (pair, int(n))
        if item not in seen:
            seen.append(item)
    return sorted(seen, key=lambda p: (p[1], p[0]))


def _positions_table(rows: list[dict]) -> list[str]:
    pos = [r for r in rows if r["kind"] == "positions"]
    if not pos:
        return []
    keys = list(pos[0]["metrics"])
    out = ["", "Step time vs cache position (median ms per frame, one long stream):", "",
           "| engine | " + " | ".join(k.replace("step_p50_pos", "pos ") for k in keys) + " |",
           "| --- | " + " | ".join("---:" for _ in keys) + " |"]
    for r in pos:
        out.append(f"| {r['engine']} | " + " | ".join(_fmt(r["metrics"][k], 1e3) for k in keys) + " |")
    return out


def _cdf(ax, xs: list[float], label: str) -> None:
    xs = sorted(x * 1e3 for x in xs if x is not None)
    if xs:  # start at 0 so that even a single sample draws its step
        ax.step([xs[0], *xs], [0.0, *((i + 1) / len(xs) for i in range(len(xs)))], where="post", label=label)
        ax.set_ylim(0, 1.02)


def plot(doc: dict, path: str | Path) -> Path:
    """Latency CDFs (TTFA, per-frame), aggregate x real time vs streams, step time vs position."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install matplotlib (or the [dev] extra)") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["rows"] if r["kind"] == "streams"]
    if not rows:
        raise ValueError("--plot draws the stream scenarios; this run has none (--streams was empty)")
    first = min(r["streams"] for r in rows)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (a_ttfa, a_frame), (a_conc, a_pos) = axes
    for r in (r for r in rows if r["streams"] == first):
        _cdf(a_ttfa, r["samples"]["ttfa_s"], r["engine"])
        _cdf(a_frame, r["samples"]["frame_latency_s"], r["engine"])
    for ax, what in ((a_ttfa, "time to first audio"), (a_frame, "per-frame latency")):
        ax.set(xscale="log", xlabel="ms (log)", ylabel="fraction", title=f"{what} CDF, {first} stream(s)")
    for engine in dict.fromkeys(r["engine"] for r in rows):
        pts = sorted((r["streams"], r["metrics"]["agg_x_real_time"]) for r in rows if r["engine"] == engine)
        a_conc.plot(*zip(*pts), marker="o", label=engine)
    a_conc.axhline(1.0, color="grey", lw=0.8, ls="--")
    a_conc.set(xscale="log", yscale="log", xlabel="concurrent streams", ylabel="aggregate x real time",
               title="concurrency (baselines serve streams one after another)")
    _plot_positions(a_pos, doc["rows"])
    for ax in axes.flat:
        if ax.has_data():
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle(conditions(doc["meta"]), fontsize=7.5, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _plot_positions(ax, rows: list[dict]) -> None:
    pos = [r for r in rows if r["kind"] == "positions"]
    if not pos:
        ax.text(0.5, 0.5, "step time vs position: run with --positions", ha="center", va="center")
        ax.set_axis_off()
        return
    for r in pos:
        lat = r["samples"]["frame_latency_s"]
        smooth = [statistics.median(lat[max(0, i - 8):i + 9]) * 1e3 for i in range(len(lat))]
        ax.plot(range(1, len(lat) + 1), smooth, lw=1.2, label=r["engine"])
    ax.set(xlabel="frame (cache position - prompt)", ylabel="ms per frame (running median of 17)", yscale="log",
           title="step time vs position, one long stream")
