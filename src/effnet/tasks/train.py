"""``effnet train``: train or fine-tune from a YAML recipe, resumable, on one process or many.

Heavy imports (torch, kornia) happen in ``run`` so ``effnet train --help`` stays instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EffnetError, UsageError

DESCRIPTION = """Train or fine-tune an EfficientNet from a YAML recipe.

examples:
  effnet train --config digits_finetune_lite0.yaml
  effnet train --config mindspore_efficientnet_b0.yaml data.train_dir=/data/train data.val_dir=/data/val
  effnet train --config my.yaml train.epochs=30 optim.lr=0.05 --output runs/try2
  effnet train --output runs/try2 --resume            # continue exactly where it stopped
  effnet train --resume runs/try2/checkpoints/checkpoint-00000400.pt   # from that checkpoint
  torchrun --nproc_per_node 4 -m effnet train --config my.yaml   # data parallel

Overrides are dotted KEY=VALUE pairs read as YAML; `--list-configs` shows the shipped recipes
and `--print-config` the resolved settings. The output folder receives config.yaml,
checkpoints/, metrics.jsonl, metrics.csv, curves.png and model*.safetensors."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="settings to change, e.g. train.epochs=5 optim.lr=0.01")
    parser.add_argument("--config", "-c", metavar="YAML",
                        help="recipe file, or the name of a shipped recipe (see --list-configs); "
                             "with --resume the run's saved config.yaml is the default")
    parser.add_argument("--output", "-o", metavar="DIR",
                        help="run folder (default: runs/<config name>)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue the run in --output from its newest readable checkpoint (an unreadable "
                             "newest one is skipped with a warning), or from the CHECKPOINT file given; the run "
                             "folder is then the one that holds it")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--list-configs", action="store_true", help="list the shipped recipes and exit")


def run(args: argparse.Namespace) -> int:
    from .training.config import config_differences, config_to_yaml, load_config, shipped_configs

    if args.list_configs:
        print("\n".join(shipped_configs()))
        return 0
    _resume_target(args)
    if args.config is None and not (args.resume and args.output):
        raise UsageError("pass --config YAML (or --resume with --output DIR of an earlier run)")
    saved = Path(args.output) / "config.yaml" if args.output else None
    if args.config is None and not saved.is_file():
        raise EffnetError(f"{args.output}: no run to resume here (it has no config.yaml); "
                          f"start one with --config YAML --output {args.output}")
    source = args.config if args.config is not None else saved
    config = load_config(source, args.overrides)
    run_name = Path(str(args.config)).stem if args.config else Path(args.output).name
    output = Path(args.output) if args.output else Path("runs") / run_name
    if args.print_config:
        print(config_to_yaml(config), end="")
        return 0
    if args.resume and args.config is not None and (output / "config.yaml").is_file():
        changes = config_differences(load_config(output / "config.yaml"), config)
        if changes:
            print(f"note: resuming with changed settings: {'; '.join(changes)}")

    from .training.engine import train

    train(config, output, resume=args.resume, run_name=run_name)
    return 0


def _resume_target(args: argparse.Namespace) -> None:
    """``--resume CHECKPOINT``: the run folder is the one holding ``checkpoints/``. A bare
    ``--resume`` followed by an override (``--resume train.epochs=5``) keeps its meaning."""
    if not isinstance(args.resume, str):
        return
    if "=" in args.resume and not Path(args.resume).exists():
        args.overrides.insert(0, args.resume)
        args.resume = True
        return
    checkpoint = Path(args.resume)
    if not checkpoint.is_file():
        raise UsageError(f"--resume {checkpoint}: no such checkpoint file")
    if checkpoint.resolve().parent.name != "checkpoints":
        raise UsageError(f"--resume {checkpoint}: not a checkpoint of an effnet run (they are "
                         "RUN/checkpoints/checkpoint-NNNNNNNN.pt); or give --output RUN --resume")
    run_folder = checkpoint.resolve().parent.parent
    if args.output is None:
        args.output = str(run_folder)
    elif Path(args.output).resolve() != run_folder:
        raise UsageError(f"--resume {checkpoint} belongs to the run in {run_folder}, not --output {args.output}")
