"""``effnet models``: every variant with its size, resolution and available weights."""

from __future__ import annotations

import argparse
import json

from ..models.spec import resolve
from ..models.variants import VARIANTS
from ..weights.registry import list_weights

DESCRIPTION = "List every EfficientNet variant: parameters, input size, scaling, weights available here."


def model_rows() -> list[dict[str, object]]:
    """One row per variant, counted from the spec (no model is built)."""
    rows = []
    for name, variant in VARIANTS.items():
        plan = resolve(name)
        entries = list_weights(name)
        rows.append({
            "model": name,
            "family": variant.family.name,
            "params": plan.num_params(),
            "train_size": plan.resolution,
            "eval_size": plan.eval_resolution,
            "width": variant.width,
            "depth": variant.depth,
            "dropout": variant.dropout,
            "weights_here": [e.name for e in entries if e.available()],
            "weights_known": [e.name for e in entries],
        })
    return rows


def list_models() -> list[str]:
    return list(VARIANTS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    rows = model_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'model':<24}{'params':>14}{'size':>11}{'width':>7}{'depth':>7}{'dropout':>9}  weights here"
    print(header)
    print("-" * len(header))
    for row in rows:
        size = f"{row['train_size']}/{row['eval_size']}" if row["train_size"] != row["eval_size"] else str(row["train_size"])
        here = ", ".join(str(w).split(".", 1)[1] for w in row["weights_here"]) or "-"  # type: ignore[attr-defined]
        print(f"{row['model']:<24}{row['params']:>14,}{size:>11}{row['width']:>7}{row['depth']:>7}"
              f"{row['dropout']:>9}  {here}")
    print("\nsize: train/eval input resolution where they differ (V2). Params with 1000 classes.")
    return 0
