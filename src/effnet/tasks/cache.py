"""``effnet cache``: list and clear what effnet keeps in its cache folder (``deploy.cache``)."""

from __future__ import annotations

import argparse

from ..deploy.cache import clear, engines_dir, list_entries
from ..options import add_options, check_json_destination, write_json
from ..weights.cache import CACHE_ENV, cache_dir

DESCRIPTION = (
    "List or clear the compiled engines effnet keeps in its cache folder ($EFFNET_CACHE, else "
    "~/.cache/effnet): the exports `--engine auto` makes once per model and weights and loads afterwards. "
    "Downloaded weights live beside them (in weights/) and are not touched."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("list", "clear"), default="list",
                        help="list: every entry with its model, weights, size and state; clear: remove entries")
    parser.add_argument("--stale", action="store_true",
                        help="only the entries another effnet version made, or damaged ones: list shows them, "
                             "clear removes them")
    add_options(parser, "json")


def run(args: argparse.Namespace) -> int:
    check_json_destination(args.json)
    if args.action == "clear":
        removed = clear(stale_only=args.stale)
        freed = sum(entry.bytes for entry in removed)
        if args.json:
            write_json(args.json, {"folder": str(engines_dir()), "removed": [_row(entry) for entry in removed]})
            if args.json == "-":
                return 0
        print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} ({freed / 1e6:.1f} MB) "
              f"from {engines_dir()}")
        return 0
    entries = [entry for entry in list_entries() if not args.stale or entry.state != "ok"]
    rows = [_row(entry) for entry in entries]
    if args.json:
        write_json(args.json, {"folder": str(engines_dir()), "entries": rows})
        if args.json == "-":
            return 0
    where = f"{cache_dir()}" + ("" if _env_set() else f" (set {CACHE_ENV} to move it)")
    if not rows:
        print(f"no {'stale or damaged ' if args.stale else ''}compiled engines in {where}")
        return 0
    print(f"compiled engines in {where}:")
    header = ("entry", "model", "weights", "size", "engine", "MB", "state", "built")
    table = [header] + [(r["entry"], r["model"], r["weights"], str(r["size"]), r["engine"], f"{r['mb']:.1f}",
                         r["state"], r["built"]) for r in rows]
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())
    print(f"{sum(r['mb'] for r in rows):.1f} MB in {len(rows)} entr{'y' if len(rows) == 1 else 'ies'}; "
          "`effnet cache clear` removes them (they are rebuilt when next needed)")
    return 0


def _row(entry) -> dict[str, object]:
    key = entry.info.get("key", {})
    return {
        "entry": entry.path.name,
        "model": entry.info.get("arch", "?"),
        "weights": entry.info.get("weights_entry") or key.get("weights", "?"),
        "size": key.get("size") or "native",
        "engine": key.get("engine", "?"),
        "effnet_version": key.get("effnet_version", "?"),
        "mb": entry.bytes / 1e6,
        "state": entry.state,
        "built": entry.info.get("built", "?"),
    }


def _env_set() -> bool:
    import os

    return bool(os.environ.get(CACHE_ENV))
