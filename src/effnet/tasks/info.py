"""``effnet info``: parameters and FLOPs of every variant, as the papers' tables count them.

The counts come from ``models`` (parameters from the plan, multiply-adds counted on the meta
device by ``models.counting``) and the reported accuracy from the weights registry; this
module only puts them side by side. The rows stay here because they are presentation: the
models room cannot know the registry's accuracy, and the registry has no business counting.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from .._progress import progress
from .._files import check_writable, staged
from ..errors import UsageError
from ..models.counting import count_macs
from ..models.variants import canonical_name, list_models, resolve
from ..options import add_options, check_json_destination, image_size, write_json
from ..weights.registry import reported_entry

DESCRIPTION = (
    "Parameters and FLOPs (multiply-adds) of every EfficientNet variant at its eval resolution, "
    "with the accuracy its weights' authors reported: a markdown table, or CSV (--csv) and JSON (--json)."
)

CONVENTION = (
    "FLOPs = multiply-adds (MACs) of conv and FC layers at each model's eval resolution, as in the "
    "EfficientNet papers; counted with torch.utils.flop_counter.FlopCounterMode (2 FLOPs per MAC, "
    "halved here). Elementwise ops are not counted. Zoos that print 2x MACs (PaddleClas: B0 0.72 G) "
    "show twice these numbers."
)

FORMATS = ("markdown", "csv", "json")


def info_row(name: str, size: int | None = None) -> dict[str, Any]:
    """One variant's row: counts from the plan and a meta-device forward, accuracy from the registry."""
    plan = resolve(name)
    entry = reported_entry(plan.name)
    return {
        "model": plan.name,
        "family": plan.family,
        "params_m": round(plan.num_params() / 1e6, 3),
        "macs_g": round(count_macs(plan, size) / 1e9, 4),
        "size": size or plan.eval_resolution,
        "train_size": plan.resolution,
        "width": plan.width,
        "depth": plan.depth,
        "top1": entry.top1 if entry else None,
        "top5": entry.top5 if entry else None,
        "weights": entry.name if entry else None,
    }


def info_rows(models: Iterable[str] | None = None, size: int | None = None,
              show_progress: bool = True) -> list[dict[str, Any]]:
    names = [canonical_name(m) for m in models] if models else list_models()
    rows = []
    with progress(total=len(names), desc="counting FLOPs", unit="model", enabled=show_progress) as bar:
        for name in names:
            bar.set_description(f"counting {name}")
            rows.append(info_row(name, size))
            bar.update()
    return rows


#: digits after the point per numeric column, so a column's numbers line up on the point
DECIMALS = {"params_m": 3, "macs_g": 3, "width": 1, "depth": 1}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{DECIMALS[key]}f}" if key in DECIMALS else f"{value:g}"
    return str(value)


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table padded to column widths: pastes into docs and reads in a terminal."""
    columns = [
        ("model", "model"), ("params_m", "params (M)"), ("macs_g", "FLOPs (G MACs)"), ("size", "size"),
        ("train_size", "train size"), ("width", "width"), ("depth", "depth"), ("top1", "top-1"),
        ("top5", "top-5"), ("weights", "reported by weights"),
    ]
    left = ("model", "weights")
    cells = [[_cell(key, row[key]) for key, _ in columns] for row in rows]
    widths = [max(len(title), *(len(line[i]) for line in cells)) for i, (_, title) in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        padded = (v.ljust(w) if key in left else v.rjust(w) for v, w, (key, _) in zip(values, widths, columns))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) if key in left else "-" * (w + 1) + ":" for w, (key, _) in zip(widths, columns)) + "|"
    return "\n".join([line([title for _, title in columns]), rule, *map(line, cells)])


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().rstrip("\n")


def to_document(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"convention": CONVENTION, "models": list(rows)}



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", metavar="NAME[,NAME...]", help="comma-separated variants, e.g. b0,lite0,v2_s (default: every variant)")
    add_options(parser, "json")
    parser.add_argument("--csv", metavar="PATH", help="write the rows as CSV to PATH besides the table, or print "
                                                      "them to stdout instead with '-'")
    # before 0.4.1: --format csv|json printed that format (--format means the file format in export)
    parser.add_argument("--format", choices=FORMATS, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=image_size, metavar="PIXELS",
                        help="count every model at this input size instead of its eval size")
    add_options(parser, "no_progress")


def run(args: argparse.Namespace) -> int:
    models = [m for m in args.models.split(",") if m.strip()] if args.models is not None else None
    if models == []:
        raise UsageError("--models names no model (e.g. --models b0,lite0)")
    legacy = getattr(args, "format", "markdown")
    json_to, csv_to = args.json or ("-" if legacy == "json" else None), args.csv or ("-" if legacy == "csv" else None)
    if json_to == "-" and csv_to == "-":
        raise UsageError("--json and --csv cannot both print to stdout; give one of them a file")
    check_json_destination(json_to)
    if csv_to not in (None, "-"):
        check_writable(csv_to)
    rows = info_rows(models, args.size, show_progress=not args.no_progress)
    if "-" not in (json_to, csv_to):
        print(f"{CONVENTION}\n\n{to_markdown(rows)}")
    if json_to:
        write_json(json_to, to_document(rows))
    if csv_to == "-":
        print(to_csv(rows))
    elif csv_to:
        with staged(csv_to) as temporary:
            temporary.write_text(to_csv(rows) + "\n")
    return 0
