"""The reference engine: the PyTorch module itself, in inference mode (CPU or CUDA)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.labels import resolve_labels
from ..data.transforms import Preprocessing
from ..errors import UsageError
from ..models.network import EfficientNet
from ..weights.loading import create_model
from .base import Engine


@dataclass
class TorchEngine(Engine):
    model: EfficientNet = field(default=None, repr=False)  # type: ignore[assignment]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    channels_last: bool = True
    #: "bf16" runs under torch.autocast (convolutions and matmuls in bf16); "fp32" is the reference
    precision: str = "fp32"

    @classmethod
    def load(
        cls,
        model: str | None = None,
        weights: Any = "default",
        device: str = "cpu",
        threads: int | None = None,
        channels_last: bool = True,
        preprocessing: Mapping[str, Any] | None = None,
        precision: str = "fp32",
    ) -> "TorchEngine":
        """Model name and weights (entry, tag, ``default``, or a file) -> engine.

        Without a model name the weights name the architecture (a full entry name such as
        ``efficientnet_lite1.tf_in1k``, or a file of ours); with neither, the embedded default
        (EfficientNet-Lite0) is used. ``device``: a torch device string
        (``cpu``, ``cuda``, ``cuda:1``). ``threads``: torch's intra-op threads, process-wide
        (torch has no per-module setting). ``preprocessing``: fields of
        ``Preprocessing.with_overrides`` replacing what the weights entry says. ``precision``:
        ``fp32``, or ``bf16`` under ``torch.autocast`` (an explicit, measured choice).
        """
        _device(device)  # a bad device or precision fails before the model is built
        if precision not in ("fp32", "bf16"):
            raise UsageError(f"--precision {precision}: the torch engine offers fp32 and bf16")
        if isinstance(weights, str) and weights.lower() in ("none", "random"):
            weights = None  # random init: for benchmarks and smoke tests, never for answers
        engine = cls.from_module(create_model(model, weights), device, threads, channels_last, preprocessing)
        engine.precision = precision
        return engine

    @classmethod
    def from_module(cls, net: EfficientNet, device: str = "cpu", threads: int | None = None,
                    channels_last: bool = True, preprocessing: Mapping[str, Any] | None = None) -> "TorchEngine":
        """An engine over a module already built (what ``load`` builds, a scaled plan no variant
        name describes, a benchmark's random weights); arguments as for ``load``."""
        target = _device(device)
        if threads is not None:
            if threads < 1:
                raise UsageError("--threads must be at least 1")
            torch.set_num_threads(threads)
        entry = getattr(net, "pretrained_cfg", None)
        recipe = entry.preprocessing if entry else Preprocessing(size=net.plan.eval_resolution)
        labels = resolve_labels(entry.labels if entry else "imagenet1k", net.num_classes)
        net = net.eval().to(target)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        return cls(name="torch", arch=net.plan.name, preprocessing=recipe.with_overrides(**(preprocessing or {})),
                   labels=labels, model=net, device=target, channels_last=channels_last)

    @property
    def device_type(self) -> str:
        return self.device.type

    @property
    def weights_name(self) -> str:
        entry = getattr(self.model, "pretrained_cfg", None)
        return entry.name if entry is not None else "random"

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model(x).float().cpu().numpy()


def _device(name: str) -> torch.device:
    """A torch device that exists here, or a one-line error naming the problem."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name}: not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device

