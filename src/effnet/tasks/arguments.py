"""Command-line arguments that several tasks share, written once so their help reads the same."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..runtime import BACKENDS


def add_model_arguments(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    """``--model``, ``--weights`` and (for tasks that run inference) ``--backend``."""
    parser.add_argument("--model", "-m", default=None,
                        help="variant name, e.g. efficientnet_lite0, lite1, b0 (default: lite0, or the "
                             "architecture stored in --weights); see `effnet models`")
    parser.add_argument("--weights", "-w", default="default",
                        help="weights entry or tag (default: the model's embedded weights), a file (.safetensors "
                             "from `effnet convert`, .pth from timm/lukemelas"
                             + (", .onnx from `effnet export`" if backend else "")
                             + "), or 'none' for random init")
    if backend:
        parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                            help="inference engine (default: auto = onnx for an .onnx --weights file, else torch)")


def keyword_or_int(keyword: str, minimum: int, keyword_value: Any) -> Callable[[str], Any]:
    """An argparse ``type``: ``keyword`` (as ``keyword_value``) or an integer of at least ``minimum``,
    e.g. ``--size dynamic|224`` or ``--keep-float auto|2``."""

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
