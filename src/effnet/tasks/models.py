"""``effnet models``: every variant with its size, resolution and available weights."""

from __future__ import annotations

import argparse

from ..models.variants import VARIANTS, list_models, resolve
from ..options import add_options, check_json_destination, write_json
from ..weights.registry import list_weights

DESCRIPTION = "List every EfficientNet variant: parameters, input size, scaling, weights available here."


def model_rows() -> list[dict[str, object]]:
    """One row per variant, counted from the spec (no model is built)."""
    rows = []
    for name in list_models():
        variant, plan, entries = VARIANTS[name], resolve(name), list_weights(name)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, "json")


def run(args: argparse.Namespace) -> int:
    check_json_destination(args.json)
    rows = model_rows()
    if args.json == "-":  # JSON on stdout replaces the table
        write_json(args.json, rows)
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
    if args.json is not None:
        write_json(args.json, rows)
    return 0
