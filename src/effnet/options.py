"""Command-line options that several commands share: declared once, one meaning each.

A command asks for the options it takes by name (``add_options(parser, "model", "weights",
"engine")``) and so gets the same flags, help and checks as every other command. Defaults
are shown by the CLI's help formatter, so no help string writes its own "(default: ...)".
Adding a shared option is one ``Option`` line in ``OPTIONS``. Options that only make sense
together come as a named group (``add_options(parser, "preprocessing")``, ``GROUPS``), with
one helper reading them back (``preprocessing_overrides``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._files import check_writable, staged
from .errors import UsageError


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, not {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, not {text!r}")
    return value


def positive_int_list(text: str) -> list[int]:
    """An argparse ``type``: comma-separated integers >= 1 (``1,16``)."""
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, not {text!r}")
    return [positive_int(value) for value in values]


#: The input sides ``--size`` takes in every command: the range a weights file's header may
#: claim (``weights.io.IMAGE_SIZES``). Past it a typo (``--size 22400``) would be an allocation
#: of many GB and a traceback rather than one line.
IMAGE_SIZES = (8, 4096)


def image_size(text: str) -> int:
    """An argparse ``type``: a square input side within ``IMAGE_SIZES``."""
    try:
        value = int(text)
    except ValueError:
        value = IMAGE_SIZES[0] - 1
    if not IMAGE_SIZES[0] <= value <= IMAGE_SIZES[1]:
        raise argparse.ArgumentTypeError(
            f"expected an integer from {IMAGE_SIZES[0]} to {IMAGE_SIZES[1]}, not {text!r}")
    return value


def keyword_or_int(keyword: str, minimum: int, keyword_value: Any) -> Callable[[str], Any]:
    """An argparse ``type``: ``keyword`` (as ``keyword_value``) or an integer of at least ``minimum``,
    e.g. ``--batch dynamic|16`` or ``--keep-float auto|2``."""

    def parse(text: str) -> Any:
        if text.lower() == keyword:
            return keyword_value
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected '{keyword}' or an integer >= {minimum}, not {text!r}")
        return value

    return parse


def keyword_or_size(keyword: str) -> Callable[[str], int | None]:
    """An argparse ``type``: ``keyword`` (as None) or an ``image_size``, e.g. ``--size dynamic|224``."""

    def parse(text: str) -> int | None:
        if text.lower() == keyword:
            return None
        try:
            return image_size(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"expected '{keyword}' or an integer from {IMAGE_SIZES[0]} to {IMAGE_SIZES[1]}, not {text!r}") from None

    return parse


def channel_values(text: str) -> tuple[float, ...]:
    """An argparse ``type``: ``0.5`` or ``0.485,0.456,0.406`` (checked by ``Preprocessing.with_overrides``)."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected one number or three comma-separated ones, not {text!r}") from None


def json_destination(text: str) -> str:
    """``--json`` values: ``-`` (stdout) or a ``.json`` file, so that a misplaced image path is
    never taken for the output and overwritten."""
    if text != "-" and not text.lower().endswith(".json"):
        raise argparse.ArgumentTypeError(f"expected '-' (stdout) or a file ending in .json, not {text!r}")
    return text


@dataclass(frozen=True)
class Option:
    """One shared option: its flags and ``add_argument`` settings."""

    flags: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    def add(self, parser: argparse.ArgumentParser | Any, **changes: Any) -> argparse.Action:
        return parser.add_argument(*self.flags, **{**self.settings, **changes})


def _engine_choices() -> tuple[str, ...]:
    from .runtime import engine_choices

    return engine_choices()


def _engine_help() -> str:
    """``--engine``'s help, with every engine of the registry and the files it runs, so that a new
    engine shows up here without anyone editing this text."""
    from .runtime import ENGINES

    engines = ", ".join(f"{spec.name} ({', '.join(spec.suffixes) + ' files' if spec.suffixes else 'the reference'})"
                        for spec in ENGINES.values())
    return f"{OPTIONS['engine'].settings['help']}, or one of: {engines}"


def _interpolations() -> tuple[str, ...]:
    from .data.transforms import INTERPOLATIONS  # numpy and Pillow: only for commands that preprocess

    return INTERPOLATIONS


OPTIONS: dict[str, Option] = {
    "model": Option(("--model", "-m"), {
        "default": None, "metavar": "NAME",
        "help": "variant name, e.g. efficientnet_lite0, lite1, b0, v2_s (default: the architecture named by "
                "--weights, else lite0); see `effnet models`"}),
    "weights": Option(("--weights", "-w"), {
        "default": "default",
        "help": "weights: an entry (efficientnet_b3.tv_in1k) or tag (tv_in1k), 'default' (the model's embedded or "
                "best weights), a file (.safetensors from `effnet convert`/`train`, .pth from timm/lukemelas/"
                "torchvision, .pdparams/.ckpt from PaddleClas/mindcv, .onnx from `effnet export`), or 'none' for "
                "random init"}),
    "engine": Option(("--engine",), {
        "default": "auto", "metavar": "NAME",
        "help": "inference engine: auto (an exported file on the engine it needs; weights on a CPU: onnxruntime on "
                "an export made once and cached, see `effnet cache`; on a GPU: torch)"}),
    "device": Option(("--device",), {
        "default": None, "help": "torch device, e.g. cpu, cuda, cuda:1 (default: cpu; torch engine only)"}),
    "threads": Option(("--threads",), {
        "type": positive_int, "default": None, "metavar": "N",
        "help": "CPU threads inside one forward pass (default: the engine's own, one per core)"}),
    "precision": Option(("--precision",), {
        "choices": ("fp32", "bf16", "int8"), "default": None,
        "help": "what the network computes in: fp32 (torch's answers; the default), bf16 (torch, or openvino on CPUs "
                "with native bf16), int8 (openvino, on a file quantized for it); bf16 and int8 trade agreement for "
                "speed: `effnet bench` measures both"}),
    "json": Option(("--json",), {
        "type": json_destination, "nargs": "?", "const": "-", "default": None, "metavar": "PATH",
        "help": "write the results as JSON to PATH (a .json file) besides what is printed, or print them to stdout "
                "instead with '-' or no PATH"}),
    "no_progress": Option(("--no-progress",), {
        "action": "store_true", "help": "no progress bar (bars are only drawn on a terminal anyway)"}),
}


@dataclass(frozen=True)
class OptionGroup:
    """Options added together under one heading of ``--help``."""

    title: str
    description: str
    options: dict[str, Option]


#: ``Preprocessing.with_overrides`` field -> the option that sets it
PREPROCESSING_FIELDS = {"size": "size", "crop_fraction": "crop_pct", "interpolation": "interpolation",
                        "mean": "mean", "std": "std"}

GROUPS: dict[str, OptionGroup] = {
    "preprocessing": OptionGroup(
        "preprocessing",
        "replace what the weights or the exported file say\n(an ONNX file effnet did not write carries none: the "
        "defaults are then a guess)",
        {
            "size": Option(("--size",), {
                "type": image_size, "metavar": "PIXELS",
                "help": "side of the square network input. The weights' crop rule scales with it (a TF-style crop "
                        "keeps its 32-pixel margin, a resize-then-crop its fraction) and a TF_SAME_STATIC "
                        "network keeps its nominal padding: timm's test size (its --test-size / test_input_size)"}),
            "crop_pct": Option(("--crop-pct",), {
                "type": float, "metavar": "FRACTION",
                "help": "share of the image's short side the centre crop keeps, e.g. 0.875"}),
            "interpolation": Option(("--interpolation",), {"help": "resize filter"}),
            "mean": Option(("--mean",), {
                "type": channel_values, "metavar": "R,G,B",
                "help": "per-channel mean on the 0-1 scale, e.g. 0.485,0.456,0.406 (one value: every channel)"}),
            "std": Option(("--std",), {
                "type": channel_values, "metavar": "R,G,B",
                "help": "per-channel standard deviation on the 0-1 scale, e.g. 0.229,0.224,0.225"}),
        },
    ),
}


def add_options(parser: argparse.ArgumentParser | Any, *names: str, **changes: dict[str, Any]) -> None:
    """Add the shared options or option groups ``names`` to ``parser``; ``changes[name]`` adjusts
    one option (e.g. serve's repeatable ``--model``)."""
    for name in names:
        if name in GROUPS:
            _add_group(parser, GROUPS[name])
            continue
        extra = {"choices": _engine_choices(), "help": _engine_help()} if name == "engine" else {}
        action = OPTIONS[name].add(parser, **{**extra, **changes.get(name, {})})
        if name == "engine":  # the name before 0.2 (README changelog), kept working
            parser.add_argument("--backend", dest=action.dest, choices=action.choices, help=argparse.SUPPRESS)


def _add_group(parser: argparse.ArgumentParser, group: OptionGroup) -> None:
    section = parser.add_argument_group(group.title, group.description)
    for name, option in group.options.items():
        option.add(section, **({"choices": _interpolations()} if name == "interpolation" else {}))


def preprocessing_overrides(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``Preprocessing.with_overrides`` fields the ``preprocessing`` options gave, or None."""
    given = {field: getattr(args, option) for field, option in PREPROCESSING_FIELDS.items()}
    return {field: value for field, value in given.items() if value is not None} or None


def check_json_destination(destination: str | None) -> None:
    """Refuse an unwritable ``--json`` destination before a long run, not after it."""
    if destination in (None, "-"):
        return
    path = Path(destination)
    if path.is_dir():
        raise UsageError(f"--json {destination} is a folder; give a file name, e.g. {path / 'results.json'}")
    if any(folder.exists() and not folder.is_dir() for folder in path.parents):
        raise UsageError(f"--json {destination}: a part of this path is a file, not a folder")
    check_writable(path)  # a read-only folder or mount, refused with the reason


def write_json(destination: str, document: Any) -> None:
    """The ``--json`` output: to stdout for ``-``, else written whole (staged) to the file."""
    text = json.dumps(document, indent=2) + "\n"
    if destination == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with staged(destination) as temporary:
        temporary.write_text(text)
