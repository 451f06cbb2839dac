"""Inference engines behind one interface, in one registry: ``ENGINES = {name: EngineSpec}``.

Every engine is an ``Engine`` (``engine(batch) -> logits``) that also says which
preprocessing and labels its weights expect. Engines are imported only when opened, so the
ONNX path never imports torch. Adding an engine is one module (a class with a ``load``
classmethod) plus one ``EngineSpec`` line below.

``auto`` (the default) runs a file on the engine that reads it (``.onnx`` -> onnxruntime);
for weights, it is ``AUTO_LOADER``: on a CPU, onnxruntime on an export made once and kept in
the compiled-engine cache (``deploy.cache``), else torch. The loader is named here by string
and imported only when used, as every engine is, so this floor does not import ``deploy``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from .base import Engine

AUTO = "auto"
#: ``load(model, weights, **options) -> Engine`` for ``auto`` when the weights are not a file
#: an engine runs as it is.
AUTO_LOADER = "effnet.deploy.cache:load_auto"


@dataclass(frozen=True)
class EngineSpec:
    """How to find and open one engine."""

    name: str
    #: ``module:Class``; the class has ``load(model, weights, **options) -> Engine``
    target: str
    summary: str
    #: importable packages the engine needs, and how a user installs them
    requires: tuple[str, ...] = ()
    install: str = ""
    #: files this engine runs as they are; under ``auto`` a file goes to the first engine that
    #: lists its suffix (``.onnx`` -> onnxruntime), the others run it when asked by name
    suffixes: tuple[str, ...] = ()
    #: what ``--precision`` may ask of it (fp32, the default, is torch's answers)
    precisions: tuple[str, ...] = ("fp32",)

    def missing(self) -> str | None:
        """Why the engine cannot run here (a package is not installed), or None."""
        absent = [package for package in self.requires if importlib.util.find_spec(package) is None]
        if absent:
            return f"{', '.join(absent)} not installed ({self.install})"
        return None

    def load(self, model: str | None, weights: Any, **options: Any) -> Engine:
        reason = self.missing()
        if reason:
            raise UsageError(f"engine '{self.name}' is not available: {reason}")
        precision = options.get("precision")
        if precision is not None and precision not in self.precisions:
            offered = ", ".join(spec.name for spec in ENGINES.values() if precision in spec.precisions)
            raise UsageError(f"--precision {precision}: the {self.name} engine offers {', '.join(self.precisions)}; "
                             f"{precision} is offered by --engine {offered}"
                             + (" (an int8 file from `effnet quantize` runs as it is, without --precision)"
                                if precision == "int8" else ""))
        if self.precisions == ("fp32",):
            options.pop("precision", None)  # its only precision: nothing to tell the loader
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute).load(model, weights, **options)


ENGINES: dict[str, EngineSpec] = {spec.name: spec for spec in (
    EngineSpec("torch", "effnet.runtime.torch_engine:TorchEngine",
               "PyTorch eager, the reference (and what training uses); CPU or CUDA", ("torch",),
               "pip install torch", precisions=("fp32", "bf16")),
    EngineSpec("onnxruntime", "effnet.runtime.onnxruntime_engine:OnnxRuntimeEngine",
               "ONNX Runtime on an .onnx file from `effnet export` (no torch needed)", ("onnxruntime",),
               "pip install onnxruntime", suffixes=(".onnx",)),
    EngineSpec("openvino", "effnet.runtime.openvino_engine:OpenVinoEngine",
               "OpenVINO on an .onnx export or an IR .xml, fp32/bf16/int8 (no torch needed)", ("openvino",),
               "pip install 'effnet[openvino]'", suffixes=(".xml", ".onnx"), precisions=("fp32", "bf16", "int8")),
    EngineSpec("litert", "effnet.runtime.litert_engine:LiteRtEngine",
               "LiteRT (TFLite) interpreter on a .tflite file from `effnet export --format tflite`", ("ai_edge_litert",),
               "pip install 'effnet[tflite]'", suffixes=(".tflite",)),
    EngineSpec("executorch", "effnet.runtime.executorch_engine:ExecuTorchEngine",
               "ExecuTorch (XNNPACK) on a .pte program from `effnet export --format executorch`", ("executorch",),
               "pip install 'effnet[executorch]'", suffixes=(".pte",)),
)}

#: Other names users type for an engine.
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "tflite": "litert"}


def engine_choices() -> tuple[str, ...]:
    """What ``--engine`` accepts."""
    return (AUTO, *ENGINES, *ALIASES)


def canonical_engine(name: str | None) -> str:
    if name in (None, AUTO):
        return AUTO
    key = ALIASES.get(str(name), str(name))
    if key not in ENGINES:
        raise UsageError(f"unknown engine '{name}'; choose one of: {', '.join(engine_choices())}")
    return key


def _file_engine(weights: Any) -> str | None:
    """The engine that runs ``weights`` as a file by itself (``.onnx`` -> onnxruntime)."""
    if not isinstance(weights, (str, os.PathLike)):
        return None
    text = str(weights).lower()
    return next((spec.name for spec in ENGINES.values() if text.endswith(spec.suffixes) and spec.suffixes), None)


def resolve_engine(name: str | None, weights: Any) -> str:
    """``auto``: the engine that runs the weights file as it is (an ``.onnx`` file runs on
    onnxruntime), else ``auto`` itself (``AUTO_LOADER`` decides when it opens). An explicit
    engine that cannot read the file is told what to do instead of failing deep inside a loader."""
    name = canonical_engine(name)
    file_engine = _file_engine(weights)
    if name == AUTO:
        return file_engine or AUTO
    if file_engine is not None and not str(weights).lower().endswith(ENGINES[name].suffixes):
        raise UsageError(f"{weights} runs on the {file_engine} engine: pass --engine {file_engine} "
                         "(or leave --engine out)")
    return name


def auto_choice(device: str | None) -> str:
    """The engine ``auto`` runs weights on: onnxruntime (a cached export) on a CPU, torch on a GPU."""
    return "onnxruntime" if device in (None, "cpu") else "torch"


def open_engine(name: str | None, model: str | None, weights: Any = "default", **options: Any) -> Engine:
    """``open_engine("torch", "efficientnet_lite0", "default")`` -> a ready engine.

    ``options`` are the engine's own (``device``, ``threads``, ...); ``None`` values are
    dropped so that every engine sees only what the caller set.
    """
    chosen = resolve_engine(name, weights)
    given = {key: value for key, value in options.items() if value is not None}
    if chosen == AUTO:
        module, _, attribute = AUTO_LOADER.partition(":")
        return getattr(importlib.import_module(module), attribute)(model, weights, **given)
    return ENGINES[chosen].load(model, weights, **given)


__all__ = ["AUTO", "AUTO_LOADER", "auto_choice", "ENGINES", "Engine", "EngineSpec", "canonical_engine", "engine_choices", "open_engine",
           "resolve_engine"]
