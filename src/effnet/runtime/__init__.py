"""Inference engines behind one interface, in one registry: ``ENGINES = {name: EngineSpec}``.

Every engine is an ``Engine`` (``engine(batch) -> logits``) that also says which
preprocessing and labels its weights expect. Engines are imported only when opened, so the
ONNX path never imports torch. Adding an engine is one module (a class with a ``load``
classmethod) plus one ``EngineSpec`` line below.
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
    #: files this engine runs as they are (``--weights model.onnx`` picks it under ``auto``)
    suffixes: tuple[str, ...] = ()

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
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute).load(model, weights, **options)


ENGINES: dict[str, EngineSpec] = {spec.name: spec for spec in (
    EngineSpec("torch", "effnet.runtime.torch_engine:TorchEngine",
               "PyTorch eager, the reference (and what training uses); CPU or CUDA", ("torch",),
               "pip install torch"),
    EngineSpec("onnxruntime", "effnet.runtime.onnxruntime_engine:OnnxRuntimeEngine",
               "ONNX Runtime on an .onnx file from `effnet export` (no torch needed)", ("onnxruntime",),
               "pip install 'effnet[onnx]'", suffixes=(".onnx",)),
    EngineSpec("litert", "effnet.runtime.litert_engine:LiteRtEngine",
               "LiteRT (TFLite) interpreter on a .tflite file from `effnet export --format tflite`", ("ai_edge_litert",),
               "pip install 'effnet[tflite]'", suffixes=(".tflite",)),
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
    onnxruntime), else torch. An explicit engine that cannot read the file is told what to
    do instead of failing deep inside a loader."""
    name = canonical_engine(name)
    file_engine = _file_engine(weights)
    if name == AUTO:
        return file_engine or "torch"
    if file_engine is not None and name != file_engine:
        raise UsageError(f"{weights} runs on the {file_engine} engine: pass --engine {file_engine} "
                         "(or leave --engine out)")
    return name


def open_engine(name: str | None, model: str | None, weights: Any = "default", **options: Any) -> Engine:
    """``open_engine("torch", "efficientnet_lite0", "default")`` -> a ready engine.

    ``options`` are the engine's own (``device``, ``threads``, ...); ``None`` values are
    dropped so that every engine sees only what the caller set.
    """
    chosen = resolve_engine(name, weights)
    given = {key: value for key, value in options.items() if value is not None}
    return ENGINES[chosen].load(model, weights, **given)


__all__ = ["AUTO", "ENGINES", "Engine", "EngineSpec", "canonical_engine", "engine_choices", "open_engine",
           "resolve_engine"]
