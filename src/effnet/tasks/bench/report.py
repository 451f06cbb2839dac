"""What ``effnet bench`` prints and writes: the table, CSV, JSON and the plot.

The table is plain aligned text (no terminal library): it reads the same in a terminal, a log
file or a pasted issue, never wraps or truncates a column on a narrow terminal, and its rows
are what the README and docs tables are made from. Files are written whole
(``effnet._files.staged``); ``-`` writes the CSV to stdout instead.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..._files import staged
from ...errors import UsageError
from ...models.variants import VARIANTS, short_name
from .machine import features
from .trials import BenchResult


def table_lines(results: Sequence[BenchResult]) -> list[str]:
    """The results as an aligned text table: text columns to the left, numbers to the right.

    With a baseline (several backends in one run), a ``vs BASELINE`` column holds its p50 over
    each row's (above 1: faster). When the run compared top-1 classes on photos, a ``top-1
    agree`` column holds each compared backend's agreement with torch fp32.
    """
    baseline = next((r.baseline for r in results if r.baseline), None)
    titles = ["model", "backend", "batch", "threads", "size", "p50 ms", "p90 ms", "p99 ms", "img/s"]
    titles += [f"vs {baseline}"] if baseline else []
    compared = any(r.agreement is not None for r in results)
    titles += ["top-1 agree"] if compared else []
    titles += ["repeats", "first call s"]
    rows = []
    for r in results:
        ratio = [f"{r.speedup:.2f}x" if r.speedup is not None else "-"] if baseline else []
        agree = [f"{100 * r.agreement:.1f}%" if r.agreement is not None else "-"] if compared else []
        rows.append([short_name(r.model), r.backend, str(r.batch_size), str(r.threads), str(r.size),
                     f"{r.p50 * 1e3:.2f}", f"{r.p90 * 1e3:.2f}", f"{r.p99 * 1e3:.2f}", f"{r.throughput:.1f}",
                     *ratio, *agree, str(r.repeats), f"{r.first_call:.2f}"])
    widths = [max(len(cell) for cell in column) for column in zip(titles, *rows)]

    def line(cells: Sequence[str], fill: str = " ") -> str:
        return "  ".join(cell.ljust(width, fill) if title in ("model", "backend") else cell.rjust(width, fill)
                         for title, cell, width in zip(titles, cells, widths)).rstrip()

    return [line(titles), line([""] * len(titles), "-"), *(line(row) for row in rows)]


def write_csv(destination: str, results: Sequence[BenchResult]) -> None:
    """One row per result (``BenchResult.row``), to ``destination`` or stdout for ``-``."""
    rows = [r.row() for r in results]
    fields = list(rows[0]) if rows else list(BenchResult.__dataclass_fields__)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if destination == "-":
        sys.stdout.write(text.getvalue())
        sys.stdout.flush()
        return
    with staged(destination) as temporary:
        temporary.write_text(text.getvalue())


def json_document(machine: dict[str, Any], config: dict[str, Any], results: Sequence[BenchResult],
                  skipped: dict[str, str]) -> dict[str, Any]:
    """What ``--json`` writes: the machine, the run's options, the rows and what was skipped (and why)."""
    return {"machine": machine, "config": config, "results": [r.row() for r in results], "skipped": skipped}


def check_plot_path(path: str) -> None:
    """Refuse a ``--plot`` file type matplotlib cannot write before the timing starts, not after it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    formats = sorted(FigureCanvasAgg.get_supported_filetypes())
    if Path(path).suffix.lower().lstrip(".") not in formats:
        raise UsageError(f"--plot {path}: matplotlib writes {', '.join('.' + f for f in formats)} files; "
                         "name the plot e.g. bench.png")


def plot(path: str, results: Sequence[BenchResult], machine: dict[str, Any]) -> None:
    """Two panels: reported top-1 vs latency (the paper's Figure 1 shape), throughput vs batch size.

    One colour per series (backend and threads) in both panels, named once in a legend below
    them; markers tell the models (throughput) or families (accuracy) apart, each model's name
    written once beside its fastest point, so ten backends of two models stay readable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from matplotlib.lines import Line2D

    figure, (accuracy_axis, throughput_axis) = plt.subplots(1, 2, figsize=(13, 5.2))
    series = sorted({(r.backend, r.threads) for r in results})
    palette = plt.get_cmap("tab10" if len(series) <= 10 else "tab20")
    colour = {key: palette(index % palette.N) for index, key in enumerate(series)}
    smallest_batch = min((r.batch_size for r in results), default=1)
    unranked = sorted({r.model for r in results if r.top1 is None})
    order = {name: index for index, name in enumerate(VARIANTS)}
    families = sorted({VARIANTS[r.model].family.name for r in results})
    family_marker = {family: "osD^v"[index % 5] for index, family in enumerate(families)}
    fastest: dict[str, tuple[float, float]] = {}
    for key in series:
        for family in families:
            # one line per family in variant order (B0, B1, ...), like the paper's Figure 1
            points = sorted(
                (order[r.model], r.p50 * 1e3, r.top1, r.model) for r in results
                if (r.backend, r.threads) == key and r.batch_size == smallest_batch
                and r.top1 is not None and VARIANTS[r.model].family.name == family
            )
            if not points:
                continue
            _, xs, ys, names = zip(*points)
            accuracy_axis.plot(xs, ys, color=colour[key], marker=family_marker[family], alpha=0.85)
            for x, y, name in zip(xs, ys, names):
                if name not in fastest or x < fastest[name][0]:
                    fastest[name] = (x, y)
    for name, (x, y) in fastest.items():
        accuracy_axis.annotate(short_name(name), (x, y), textcoords="offset points", xytext=(-7, 0), fontsize=9,
                               ha="right", va="center", weight="bold",
                               bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                                     "alpha": 0.8})
    accuracy_axis.set_xscale("log")
    # label 1-2-5 steps only: every minor tick labelled overlaps once the range spans decades
    accuracy_axis.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    accuracy_axis.xaxis.set_major_formatter(plain)
    accuracy_axis.xaxis.set_minor_formatter(plain)
    accuracy_axis.set_xlabel(f"latency p50 at batch {smallest_batch} (ms, log scale)")
    accuracy_axis.set_ylabel("ImageNet top-1 (%) reported for the weights")
    accuracy_axis.set_title("accuracy vs latency")
    accuracy_axis.grid(alpha=0.3)
    accuracy_axis.margins(x=0.12, y=0.15)
    if len(families) > 1 and accuracy_axis.lines:
        accuracy_axis.legend([Line2D([], [], color="0.3", marker=family_marker[f], linestyle="") for f in families],
                             families, fontsize=8, loc="center right", title="family", title_fontsize=8)
    if unranked:
        accuracy_axis.text(0.02, 0.98 if accuracy_axis.lines else 0.5,
                           "no reported top-1: " + ", ".join(map(short_name, unranked)),
                           transform=accuracy_axis.transAxes, fontsize=8, va="top", color="0.35")

    models = sorted({r.model for r in results}, key=lambda name: order.get(name, len(order)))
    markers, dashes = "osD^vP*X", ("-", "--", ":", "-.")
    model_style = {model: (markers[i % len(markers)], dashes[i // len(markers) % len(dashes)])
                   for i, model in enumerate(models)}
    for model in models:
        for key in series:
            points = sorted((r.batch_size, r.throughput) for r in results
                            if (r.model, r.backend, r.threads) == (model, *key))
            if points:
                xs, ys = zip(*points)
                marker, dash = model_style[model]
                throughput_axis.plot(xs, ys, color=colour[key], marker=marker, linestyle=dash, alpha=0.85)
    batch_sizes = sorted({r.batch_size for r in results})
    throughput_axis.set_xscale("log", base=2)
    throughput_axis.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    throughput_axis.minorticks_off()
    throughput_axis.set_xlabel("batch size")
    throughput_axis.set_ylabel("throughput (images/s)")
    throughput_axis.set_title("throughput vs batch size")
    throughput_axis.grid(alpha=0.3, which="both")
    throughput_axis.legend([Line2D([], [], color="0.3", marker=model_style[m][0], linestyle=model_style[m][1])
                            for m in models], [short_name(m) for m in models], fontsize=8, loc="best",
                           title="model", title_fontsize=8)
    figure.legend([Line2D([], [], color=colour[key], marker="s", linestyle="-", linewidth=3) for key in series],
                  [_series(*key) for key in series], loc="lower center", ncol=min(len(series), 5), fontsize=9,
                  frameon=False)
    sizes = sorted({r.size for r in results})
    figure.suptitle(
        f"{machine['cpu']}{features(machine)}, {machine['cores']} cores, "
        f"GPU: {machine['gpu'] or 'none'} | torch {machine['torch']} | input {'/'.join(map(str, sizes))} px | "
        f"{machine['allocator']}", fontsize=9)
    rows = -(-len(series) // 5)
    figure.tight_layout(rect=(0, 0.05 + 0.04 * rows, 1, 1))  # room for the series legend below
    with staged(path, suffix=Path(path).suffix or ".png") as temporary:  # the suffix picks the image format
        figure.savefig(temporary, dpi=110, bbox_inches="tight")
    plt.close(figure)


def _series(backend: str, threads: int, short: bool = False) -> str:
    """A backend and its CPU threads (which say nothing about a CUDA backend's speed)."""
    if backend.startswith("cuda"):
        return backend
    return f"{backend} {threads}t" if short else f"{backend}, {threads} thread{'s' * (threads != 1)}"
