"""``effnet``: thin command line. Parse arguments, call a task, print; errors are one line.

Only the chosen subcommand's module is imported, so ``effnet --help`` and the ONNX path
start fast and never import torch unless the task needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ._malloc import tune_malloc
from .errors import EffnetError

#: subcommand -> task module (each has DESCRIPTION, add_arguments(parser), run(args) -> int)
COMMANDS: dict[str, str] = {
    "predict": "effnet.tasks.predict",
    "models": "effnet.tasks.models",
    "convert": "effnet.tasks.convert",
    "eval": "effnet.tasks.evaluate",
    "train": "effnet.tasks.train",
    "info": "effnet.tasks.info",
    "scale": "effnet.tasks.scale",
    "bench": "effnet.tasks.bench",
    "serve": "effnet.serve.command",
    "export": "effnet.tasks.export",
    "quantize": "effnet.tasks.quantize",
    "cache": "effnet.tasks.cache",
}

SUMMARIES: dict[str, str] = {
    "predict": "classify images (top-k with class names)",
    "models": "list every variant with params, input size and weights",
    "convert": "lukemelas/timm/torchvision/Keras/PaddleClas/MindSpore checkpoints to safetensors with metadata",
    "eval": "top-1/top-5 accuracy on an ImageFolder tree or images + label file",
    "train": "train or fine-tune from a YAML recipe (resumable, torchrun for many processes)",
    "info": "params and FLOPs (multiply-adds) of every variant, with reported accuracy",
    "scale": "compound scaling: derive a model from B0 for a phi, FLOPs or latency target",
    "bench": "latency/throughput per model, batch size, threads and backend, with plots",
    "serve": "HTTP server with dynamic batching, a web page and metrics",
    "export": "export to ONNX, a Triton repository, TFLite or ExecuTorch (checked vs torch; metadata inside)",
    "quantize": "int8 ONNX (or OpenVINO IR) with calibration images, sensitive layers float, fp32-vs-int8 report",
    "cache": "list or clear the compiled engines --engine auto keeps (one export per model and weights)",
}


def _top_level_help() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: effnet COMMAND [options]   (effnet COMMAND --help or effnet help COMMAND for details; effnet --version)",
        "",
        "EfficientNet V1, Lite and V2: build, load, predict, evaluate, train, export, bench, serve.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {SUMMARIES[name]}" for name in COMMANDS]
    lines += ["", "example: effnet predict examples/images/cat.jpg   (EfficientNet-Lite0, embedded ImageNet weights)"]
    return "\n".join(lines)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; every option's help ends with its default when it
    has a meaningful one (not None/False), so no help string writes "(default: ...)" by hand."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or "(default" in text or default in (None, False, argparse.SUPPRESS):
            return text
        if not action.option_strings or isinstance(default, (list, tuple)) and not default:
            return text
        return f"{text} (default: %(default)s)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "help" and argv[1] in COMMANDS:
        argv = [argv[1], "--help"]  # effnet help predict
    if not argv or argv[0] in ("-h", "--help", "help"):
        try:
            print(_top_level_help(), flush=True)
        except BrokenPipeError:
            return _closed_pipe()
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__

        print(f"effnet {__version__}")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        print(_top_level_help(), file=sys.stderr)
        print(f"\neffnet: error: unknown command '{command}'", file=sys.stderr)
        return 2
    tune_malloc()
    module = importlib.import_module(COMMANDS[command])
    parser = argparse.ArgumentParser(prog=f"effnet {command}", description=module.DESCRIPTION,
                                     formatter_class=HelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            # Pillow's DecompressionBombWarning: data.images checks every image against effnet's own
            # pixel limit before decoding it and reports one line, which this warning would only precede.
            warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
            return int(module.run(args) or 0)
    except EffnetError as error:
        print(f"effnet: {error.label}{error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("effnet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()
    except OSError as error:
        # The file system said no (unwritable output, disk full): the user's environment, not a bug.
        print(f"effnet: error: {_describe_os_error(error)}", file=sys.stderr)
        return 1


def _one_line_warnings(default: Callable[..., None]) -> Callable[..., None]:
    """effnet's own warnings (a guessed preprocessing, ...) as ``effnet: warning: ...``, one line
    like its errors; other libraries' warnings keep Python's format."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if category.__module__.split(".")[0] == "effnet":
            print(f"effnet: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def _describe_os_error(error: OSError) -> str:
    if error.filename is None or error.strerror is None:
        return str(error)
    return f"{error.filename}: {error.strerror.lower()}"


def _closed_pipe() -> int:
    """``effnet ... | head``: the reader left. Exit quietly with the status a shell gives a
    command killed by SIGPIPE, and point stdout at /dev/null so the interpreter's final flush
    does not raise again (https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


if __name__ == "__main__":
    sys.exit(main())
