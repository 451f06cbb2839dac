"""``effnet convert``: a checkpoint from lukemelas, timm, torchvision, Keras, PaddleClas or mindcv
-> our safetensors.

The output carries everything needed to use it correctly (architecture, padding, BatchNorm
epsilon, preprocessing, labels, reported accuracy) in its safetensors header, so
``--weights OUT.safetensors`` works in every task with no further flags. Conversion is
strict: every source tensor must land on a parameter of the same shape
(``weights.conversion.convert_file``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .._files import check_writable
from ..errors import UsageError
from ..models.variants import canonical_name
from ..weights.sources import SOURCES

if TYPE_CHECKING:
    from ..weights.conversion import Conversion

DESCRIPTION = (
    "Convert a checkpoint from lukemelas (efficientnet_pytorch), timm, torchvision, Keras "
    "(.keras/.h5 of keras.applications EfficientNet/EfficientNetV2), PaddleClas (.pdparams) or "
    "MindSpore's mindcv (.ckpt, --from mindspore) into a .safetensors file that carries its architecture, padding, "
    "BatchNorm epsilon, preprocessing and labels. No other framework is needed, and nothing in "
    "the file is executed."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="checkpoint file (.pth/.pt/.bin/.safetensors, .keras/.h5, .pdparams, .ckpt)")
    parser.add_argument("--from", dest="source", choices=[name for name, s in SOURCES.items() if s.convertible],
                        default=None, help="layout of SRC (default: detected from its tensor names)")
    parser.add_argument("--model", "-m", required=True,
                        help="variant the weights are for, e.g. efficientnet_b0, b3, lite0, v2_s")
    parser.add_argument("--output", "-o", required=True, metavar="OUT.safetensors", help="file to write")
    parser.add_argument("--entry", default=None,
                        help="registry entry whose padding/eps/preprocessing/accuracy describe SRC, e.g. "
                             "tf_ap_in1k (default: the entry whose checksum SRC has, else the usual one for "
                             "--from; Keras files take their normalization from the file)")
    names = parser.add_argument("--class-names", default=None, metavar="FILE",
                                help="class names, one per line (for a classifier that is not ImageNet-1k)")
    # the name before 0.4.1 (README changelog), kept working; hidden, as --labels is ground truth in eval
    parser.add_argument("--labels", dest=names.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--force", action="store_true", help=argparse.SUPPRESS)  # before 0.2: writers now replace


def run(args: argparse.Namespace) -> int:
    # torch only once the arguments are good: `effnet convert --help` stays fast
    from ..weights.conversion import convert_file

    arch = canonical_name(args.model)
    src, out = Path(args.src).expanduser(), Path(args.output).expanduser()
    if out.suffix != ".safetensors":
        raise UsageError(f"--output must end in .safetensors, not '{out.name}'")
    if out.resolve() == src.resolve():
        raise UsageError("--output must not be the source file")
    labels = _read_class_names(args.class_names) if args.class_names else None
    conversion = convert_file(src, arch, source=args.source, entry_name=args.entry, labels=labels)
    if conversion.guessed:
        entry = conversion.entry
        print(f"effnet convert: warning: no registered entry describes {src.name}: using {conversion.source}'s "
              f"defaults (padding {entry.padding.value}, BatchNorm eps {entry.bn_eps:g}, ImageNet mean/std at "
              f"{entry.preprocessing.size}px); pass --entry TAG if it was trained with another entry's settings",
              file=sys.stderr)
    replaced = check_writable(out)  # like every writer: checked first, replaced and said so
    conversion.write(out)
    if replaced:
        print(f"replaced {out}")
    print(_summary(conversion, src, out))
    return 0


def _read_class_names(path: str) -> tuple[str, ...]:
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read --class-names {path}: {exc.strerror or exc}") from None
    return tuple(line.strip() for line in lines if line.strip())


def _summary(conversion: Conversion, src: Path, out: Path) -> str:
    entry = conversion.entry
    pre = entry.preprocessing
    accuracy = f"; reported top-1 {entry.top1} ({entry.reported_by})" if entry.top1 is not None else ""
    if "settings_from" in entry.extra:
        described = f"checksum not registered: settings of {entry.extra['settings_from']}"
    elif conversion.guessed:
        described = f"no registered entry: {conversion.source} defaults"
    else:
        described = f"as {entry.name}"
    return "\n".join([
        f"wrote {out}: {entry.arch}, {conversion.num_params:,} parameters, {entry.num_classes} classes "
        f"(from {conversion.source} file {src.name}, {described})",
        f"  padding {entry.padding.value}, BatchNorm eps {entry.bn_eps:g}",
        f"  preprocessing: {pre.size}px, {pre.crop_mode} (crop {pre.crop_fraction:.3f}), {pre.interpolation}, "
        f"mean {_triple(pre.mean)}, std {_triple(pre.std)}{accuracy}",
        f"  use it: effnet predict IMAGE --weights {out}",
    ])


def _triple(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
