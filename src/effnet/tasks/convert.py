"""``effnet convert``: a checkpoint from lukemelas, timm, torchvision or Keras -> our safetensors.

The output carries everything needed to use it correctly (architecture, padding, BatchNorm
epsilon, preprocessing, labels, reported accuracy) in its safetensors header, so
``--weights OUT.safetensors`` works in every task with no further flags. Conversion is
strict: every source tensor must land on a parameter of the same shape.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

DESCRIPTION = (
    "Convert a checkpoint from lukemelas (efficientnet_pytorch), timm, torchvision or Keras "
    "(.keras/.h5 of keras.applications EfficientNet/EfficientNetV2) into a .safetensors file that "
    "carries its architecture, padding, BatchNorm epsilon, preprocessing and labels."
)

SOURCES = ("lukemelas", "timm", "torchvision", "keras")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="checkpoint file (.pth/.pt/.bin/.safetensors, .keras/.h5)")
    parser.add_argument("--from", dest="source", choices=SOURCES, default=None,
                        help="layout of SRC (default: detected from its tensor names)")
    parser.add_argument("--model", "-m", required=True,
                        help="variant the weights are for, e.g. efficientnet_b0, b3, lite0, v2_s")
    parser.add_argument("--output", "-o", required=True, metavar="OUT.safetensors", help="file to write")
    parser.add_argument("--entry", default=None,
                        help="registry entry whose padding/eps/preprocessing/accuracy describe SRC, e.g. "
                             "tf_ap_in1k (default: the entry whose checksum SRC has, else the usual one for "
                             "--from; Keras files take their normalization from the file)")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="class names, one per line (for a classifier that is not ImageNet-1k)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..models.variants import canonical_name

    arch = canonical_name(args.model)
    src, out = Path(args.src).expanduser(), Path(args.output).expanduser()
    if out.suffix != ".safetensors":
        raise UsageError(f"--output must end in .safetensors, not '{out.name}'")
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists; pass --force to overwrite it")
    if out.resolve() == src.resolve():
        raise UsageError("--output must not be the source file")
    labels = _read_labels(args.labels) if args.labels else None
    result = convert_file(src, arch, source=args.source, entry_name=args.entry, labels=labels)
    _write(result, out)
    print(_summary(result, src, out))
    return 0


def convert_file(
    src: Path,
    arch: str,
    *,
    source: str | None = None,
    entry_name: str | None = None,
    labels: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Read, map and strictly check ``src``; return the tensors and the entry describing them."""
    import torch

    from ..models.network import build_model
    from ..models.spec import resolve
    from ..weights.convert import (
        check_compatible,
        classifier_rows,
        convert_state_dict,
        detect_source,
        fill_batch_counters,
        read_checkpoint,
    )
    from ..weights.loading import entry_for_file
    from ..weights.registry import WeightsError, get_weights

    state, metadata = read_checkpoint(src)
    detected = _layout(state)
    if source is not None and detected is not None and detected != source:
        raise WeightsError(f"{src} has {detected}'s tensor names, not {source}'s; use --from {detected} "
                           "(or leave --from out: the layout is detected)")
    source = source or detect_source(state)
    entry = entry_for_file(src, arch, state, metadata, source)  # type: ignore[arg-type]
    if entry_name is not None:
        chosen = get_weights(entry_name, arch)
        entry = replace(chosen, file=str(src), url=None, sha256=None)
    num_classes = classifier_rows(state) or entry.num_classes
    if labels is not None and len(labels) != num_classes:
        raise WeightsError(f"--labels has {len(labels)} names but the classifier has {num_classes} classes")
    entry = replace(entry, num_classes=num_classes,
                    labels=labels or ("imagenet1k" if num_classes == 1000 else entry.labels))
    converted = convert_state_dict(state, source, resolve(arch, num_classes=num_classes))  # type: ignore[arg-type]
    with torch.device("meta"):
        model = build_model(arch, num_classes=num_classes, padding=entry.padding, bn_eps=entry.bn_eps)
    expected = model.state_dict()
    fill_batch_counters(converted, expected)
    check_compatible(converted, expected, arch)
    converted = {k: v.float() if v.is_floating_point() else v for k, v in converted.items()}
    return {"state": converted, "entry": entry, "source": source,
            "num_params": sum(p.numel() for p in model.parameters())}


def _layout(state: dict[str, Any]) -> str | None:
    """The layout ``detect_source`` recognises in ``state``, or None where it knows none."""
    from ..weights.convert import detect_source
    from ..weights.registry import WeightsError

    try:
        return detect_source(state)
    except WeightsError:
        return None


def _write(result: dict[str, Any], out: Path) -> None:
    from ..weights.convert import write_safetensors
    from ..weights.loading import metadata_from_entry

    entry = result["entry"]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(result["state"], out, metadata_from_entry(
        entry, source=result["source"], converted_from=Path(entry.file or "").name,
        settings_from=entry.extra.get("settings_from", entry.name)))


def _read_labels(path: str) -> tuple[str, ...]:
    from ..errors import UsageError

    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read --labels {path}: {exc.strerror or exc}") from None
    return tuple(line.strip() for line in lines if line.strip())


def _summary(result: dict[str, Any], src: Path, out: Path) -> str:
    entry = result["entry"]
    pre = entry.preprocessing
    accuracy = f"; reported top-1 {entry.top1} ({entry.reported_by})" if entry.top1 is not None else ""
    return "\n".join([
        f"wrote {out}: {entry.arch}, {result['num_params']:,} parameters, {entry.num_classes} classes "
        f"(from {result['source']} file {src.name}, {_described_as(entry)})",
        f"  padding {entry.padding.value}, BatchNorm eps {entry.bn_eps:g}",
        f"  preprocessing: {pre.size}px, {pre.crop_mode} (crop {pre.crop_fraction:.3f}), {pre.interpolation}, "
        f"mean {_triple(pre.mean)}, std {_triple(pre.std)}{accuracy}",
        f"  use it: effnet predict IMAGE --weights {out}",
    ])


def _described_as(entry: Any) -> str:
    if "settings_from" in entry.extra:
        return f"checksum not registered: settings of {entry.extra['settings_from']}"
    return f"as {entry.name}"


def _triple(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
