"""A network to ONNX, checked against torch, carrying everything needed to use it.

The exported file is verified before it is written: the ONNX checker, then onnxruntime logits
against torch on random inputs (every dynamic axis exercised, including an odd spatial size,
so TF-"same" padding is proven to follow the input). Metadata (architecture, weights,
padding, preprocessing, labels, input layout) goes into the file through the one writer
``runtime.onnx_metadata.write_metadata``, so ``effnet predict --weights model.onnx`` needs
nothing else.

Traps handled here:

- Dynamic sizes (opset 18+, torch's dynamo exporter): TF "same" padding stays dynamic,
  ``models.layers.same_padding`` is symbolic integer arithmetic exported as shape ops feeding
  ``Pad``. A fixed size (any opset 11-23; the default below 18): the TorchScript exporter on a
  copy whose padding is frozen into each ``Conv``'s static pads (``static_graph``), a graph
  NPU compilers, TensorRT and OpenVINO take as it is.
- SiLU exports as ``Sigmoid`` + ``Mul``, which onnxruntime fuses (``QuickGelu``); ReLU6 is
  exported as ``clamp`` (one ``Clip`` that fuses into ``Conv``, ``export_friendly``) because
  the exporter would otherwise decompose ``hardtanh`` op by op under symbolic shapes, which
  takes minutes.
- The default opset (18) is the lowest with an antialiasing ``Resize`` and every
  onnxruntime fusion applies to it (``tests/deploy/export/test_onnx.py`` checks the fused graph).
- ``with_preprocessing`` puts resize, crop and normalization as ONNX ops (uint8 antialiased
  bicubic ``Resize``, which reproduces Pillow's filter) in front of the network
  (``preprocessing_graph``); ``nv12`` puts NV12 decoding, resize, crop and normalization for
  one fixed frame size in front of it at any opset (``nv12_graph``).

torch is imported inside the functions that need it, so that ``effnet export --help`` and the
Triton writer start without it.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..._files import check_writable, staged
from ..._quiet import quiet
from ...data.labels import resolve_labels
from ...data.nv12 import check_frame_size, rgb_to_nv12
from ...data.transforms import Preprocessing
from ...errors import EffnetError, UsageError
from ...runtime.onnx_metadata import FORMAT, INPUT_BGR, INPUT_FLOAT, INPUT_NV12, INPUT_RGB, write_metadata
from ...runtime.onnxruntime_engine import open_session
from .nv12_graph import nv12_graph
from .preprocessing_graph import IMAGE_NAME, INPUT_NAME, attach_preprocessing, preprocessing_graph
from .static_graph import static_to_onnx

DEFAULT_OPSET = 18
#: The lowest opset (fixed sizes, TorchScript exporter); the highest onnxruntime here runs.
MIN_OPSET, MAX_OPSET = 11, 23
#: The lowest opset for dynamic sizes (the dynamo exporter) and for --with-preprocessing.
DYNAMIC_MIN_OPSET = 18
#: Max abs logits difference accepted between onnxruntime and torch on the network itself,
#: unless torch's own float32 error (vs float64) is larger: then ``FLOAT32_SLACK`` times that
#: (random-init nets with logits in the hundreds round at the 1e-3 level in torch too).
TOLERANCE = 1e-4
FLOAT32_SLACK = 4.0
#: Max abs logits difference accepted between in-graph and Python preprocessing: measured on
#: the photos in tests/deploy/export/test_onnx.py (largest seen 0.26 on Lite0; see docs/deploy.md).
PREPROCESSING_TOLERANCE = 1.0
#: NV12 checks: torch's top two closer than this (logits) are a tie that chroma subsampling may
#: swap (measured ties on real photos: 0.002-0.004; random-weight nets have all logits closer).
TOP1_TIE = 0.05

OUTPUT_NAME = "logits"
#: ``export(size=NATIVE_SIZE)``: a fixed input size, the one the weights' preprocessing crops to.
NATIVE_SIZE = "native"


class ExportError(EffnetError):
    """The export failed or produced a graph that does not match torch; nothing was written."""


@dataclass
class ExportResult:
    """The written file, what it holds, and the checks it passed (one dict per input shape)."""

    path: Path
    arch: str
    opset: int
    input_layout: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    #: a file was at ``path`` before, and this export replaced it
    replaced: bool = False


# -- torch -> ONNX ------------------------------------------------------------------------
def export_friendly(net: Any) -> Any:
    """Swap ``nn.ReLU6`` for ``clamp`` in place: same values, one ``Clip``, no slow decomposition."""
    import torch
    from torch import nn

    class Clamp6(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.clamp(x, 0.0, 6.0)

    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(module, name, Clamp6())
    return net


def torch_to_onnx(net: Any, batch: int | None, size: int | None, opset: int, example_size: int) -> Any:
    """The network as an ``onnx.ModelProto``; ``None`` for batch/size means a dynamic axis.

    ``batch`` and the spatial axes are ``torch.export.Dim`` objects when dynamic, so every
    shape in the graph is computed from the input (no Python int is baked in).
    """
    import torch

    dims: dict[int, Any] = {}
    if batch is None:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    if size is None:
        dims[2] = torch.export.Dim("height", min=8, max=8192)
        dims[3] = torch.export.Dim("width", min=8, max=8192)
    example = torch.randn(batch or 2, 3, size or example_size, size or example_size)
    with quiet():  # a warning per missing torchvision op, progress lines: none of them concern us
        try:
            program = torch.onnx.export(
                net, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({**dims},) if dims else None, verbose=False,
            )
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    return program.model_proto


# -- checks -------------------------------------------------------------------------------
def _test_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth deterministic photo-like uint8 image (no files needed for the check)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.int16)
    noise = rng.integers(-6, 7, size=smooth.shape, dtype=np.int16)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def torch_logits(module: Any, inputs: np.ndarray) -> np.ndarray:
    """``module``'s float32 logits for ``inputs`` (what an exported file is compared with)."""
    import torch

    with torch.inference_mode():
        return module(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))).float().numpy()


def float32_error(module: Any, inputs: np.ndarray, expected: np.ndarray) -> float:
    """How far torch's own float32 logits ``expected`` are from float64 (max abs): a file may
    differ from torch by ``FLOAT32_SLACK`` times that (random-init nets round at 1e-3 too)."""
    import torch

    with torch.inference_mode():
        float64 = np.asarray(inputs, dtype=np.float32).astype(np.float64)  # the same values torch saw
        exact = copy.deepcopy(module).double()(torch.from_numpy(float64)).numpy()
    return float(np.abs(expected - exact).max())


def check_network(path: Path, net: Any, batch: int | None, size: int | None, default_size: int) -> list[dict[str, Any]]:
    """onnxruntime vs torch on random inputs at every shape the file promises to accept."""
    import torch

    session = open_session(path)
    base = size or default_size
    shapes = [(batch or 2, base, base)]
    if size is None:
        shapes.append((batch or 1, base + 1, base + 37))  # odd sizes: TF "same" pads differ
    generator = torch.Generator().manual_seed(0)
    checks = []
    for n, h, w in shapes:
        x = torch.randn(n, 3, h, w, generator=generator)
        with torch.inference_mode():
            expected = net(x).float().numpy()
            exact = net.double()(x.double()).numpy()
            net.float()
        actual = session.run(None, {INPUT_NAME: x.numpy()})[0]
        own_error = float(np.abs(expected - exact).max())
        checks.append({"what": "network", "shape": [n, 3, h, w], "max_abs_diff": float(np.abs(actual - expected).max()),
                       "tolerance": max(TOLERANCE, FLOAT32_SLACK * own_error)})
    return checks


def check_with_preprocessing(path: Path, net: Any, preprocessing: Preprocessing, bgr: bool) -> list[dict[str, Any]]:
    """The uint8-input graph vs Python preprocessing + torch on odd-sized synthetic images."""
    import torch

    session = open_session(path)
    checks = []
    for seed, (h, w) in enumerate([(301, 457), (480, 353)]):
        image = _test_image(h, w, seed)
        with torch.inference_mode():
            expected = net(torch.from_numpy(preprocessing(image)[None])).float().numpy()
        feed = image[..., ::-1] if bgr else image
        actual = session.run(None, {IMAGE_NAME: np.ascontiguousarray(feed[None])})[0]
        checks.append({
            "what": "with preprocessing", "shape": [1, h, w, 3], "max_abs_diff": float(np.abs(actual - expected).max()),
            "tolerance": PREPROCESSING_TOLERANCE, "same_top1": bool(actual.argmax() == expected.argmax()),
        })
    return checks


def check_nv12(path: Path, net: Any, preprocessing: Preprocessing, frame: tuple[int, int],
               colour_range: str) -> list[dict[str, Any]]:
    """The NV12-input graph on synthetic frames converted to NV12 in numpy vs Python
    preprocessing + torch on the same RGB frames (chroma subsampling included in the error)."""
    import torch

    session = open_session(path)
    checks = []
    for seed in range(2):
        image = _test_image(*frame, seed)
        with torch.inference_mode():
            expected = net(torch.from_numpy(preprocessing(image)[None])).float().numpy()
        actual = session.run(None, {IMAGE_NAME: rgb_to_nv12(image, colour_range)[None]})[0]
        difference = float(np.abs(actual - expected).max())
        tie = expected[0, actual.argmax()] >= expected.max() - TOP1_TIE
        checks.append({
            "what": "nv12 input", "shape": [1, frame[0] * 3 // 2, frame[1]], "max_abs_diff": difference,
            "tolerance": PREPROCESSING_TOLERANCE, "same_top1": bool(actual.argmax() == expected.argmax() or tie),
        })
    return checks


def _refuse_failed(checks: list[dict[str, Any]]) -> None:
    failed = [c for c in checks if c["max_abs_diff"] > c["tolerance"] or not c.get("same_top1", True)]
    if failed:
        worst = max(failed, key=lambda c: c["max_abs_diff"])
        raise ExportError(f"exported graph does not match torch: {worst['what']} at {worst['shape']} differs "
                          f"by {worst['max_abs_diff']:.3g} (tolerance {worst['tolerance']:g}); nothing written")


# -- export -------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnnxSettings:
    """How a network is exported, checked when made (before any slow work): settings that
    exclude each other are one ``UsageError``.

    ``batch``/``size`` None: dynamic axes; size ``NATIVE_SIZE``: the weights' own input size.
    A fixed size exports a static graph (frozen padding, any opset from 11); without one,
    opsets below 18 fix the size at the weights' own. ``nv12`` (height, width): the graph
    takes NV12 frames of that size (``NATIVE_SIZE``: the weights' own, square; ``nv12_range``:
    BT.601 "video" or "full" range).
    """

    batch: int | None = None
    size: int | str | None = None
    opset: int = DEFAULT_OPSET
    with_preprocessing: bool = False
    bgr: bool = False
    nv12: tuple[int, int] | str | None = None
    nv12_range: str = "video"

    def __post_init__(self) -> None:
        if self.size == NATIVE_SIZE and self.with_preprocessing:
            raise UsageError("a fixed native size and --with-preprocessing exclude each other")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UsageError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, not {self.opset}")
        if self.bgr and not self.with_preprocessing:
            raise UsageError("--bgr only applies with --with-preprocessing")
        if self.with_preprocessing and self.opset < DYNAMIC_MIN_OPSET:
            raise UsageError(f"--with-preprocessing needs --opset {DYNAMIC_MIN_OPSET} or newer (antialiased "
                             "Resize); --input nv12 works from opset 11")
        if self.nv12 is not None and self.with_preprocessing:
            raise UsageError("--input nv12 and --with-preprocessing exclude each other (both put preprocessing "
                             "in the graph)")
        if isinstance(self.nv12, tuple):
            check_frame_size(*self.nv12)


def export(model: str | None = None, weights: Any = "default", output: str | os.PathLike = "model.onnx", *,
           log: Callable[[str], None] | None = None, **settings: Any) -> ExportResult:
    """Load ``model`` with ``weights`` (as every command does), then ``export_network`` it.

    ``settings``: ``OnnxSettings``'s fields (``batch``, ``size``, ``opset``, ...); they and
    ``output`` are checked before the weights are loaded. Raises ``ExportError`` (and writes
    nothing) when a check fails.
    """
    from ...runtime.torch_engine import TorchEngine  # torch: only once an export really runs

    chosen = OnnxSettings(**settings)
    check_writable(output)
    started = time.perf_counter()
    engine = TorchEngine.load(model, weights, channels_last=False)
    result = export_network(engine.model, output, log=log, **asdict(chosen))
    result.seconds = time.perf_counter() - started
    return result


def export_network(net: Any, output: str | os.PathLike, *, log: Callable[[str], None] | None = None,
                   **settings: Any) -> ExportResult:
    """Export a built ``EfficientNet`` (its ``pretrained_cfg`` when it has one, else random
    weights at its plan's resolution) with ``settings`` (``OnnxSettings``'s fields), check it
    against torch and write ``output``.

    The caller's module is left as it was (the export works on a CPU copy in eval mode), so
    ``effnet bench`` can export the module it times. Raises ``ExportError`` (and writes
    nothing) when a check fails, and ``UsageError`` before any work when the settings exclude
    each other or ``output`` cannot be written; an existing file is replaced
    (``ExportResult.replaced``).
    """
    chosen = OnnxSettings(**settings)
    batch, size, opset, nv12 = chosen.batch, chosen.size, chosen.opset, chosen.nv12
    with_preprocessing, bgr, nv12_range = chosen.with_preprocessing, chosen.bgr, chosen.nv12_range
    replaced = check_writable(output)
    say = log or (lambda message: None)
    started = time.perf_counter()
    net = export_friendly(copy.deepcopy(net).cpu().eval())
    preprocessing = weights_preprocessing(net)
    if size == NATIVE_SIZE:
        size = preprocessing.size
    elif size is not None:
        preprocessing = preprocessing.with_size(size)
    if with_preprocessing or nv12 is not None:
        size = preprocessing.size  # the graph resizes any image to exactly this
    elif size is None and opset < DYNAMIC_MIN_OPSET:
        size = preprocessing.size
        say(f"opset {opset}: fixed size {size} (dynamic sizes need opset {DYNAMIC_MIN_OPSET} or newer)")
    layout = (INPUT_BGR if bgr else INPUT_RGB) if with_preprocessing else INPUT_FLOAT
    if nv12 == NATIVE_SIZE:
        nv12 = (preprocessing.size, preprocessing.size)
    if nv12 is not None:
        check_frame_size(*nv12)
        layout = INPUT_NV12
    metadata = network_metadata(net, preprocessing, layout)
    if nv12 is not None:
        metadata["nv12"] = {"height": nv12[0], "width": nv12[1], "range": nv12_range}
        front = nv12_graph(preprocessing, nv12[0], nv12[1], nv12_range, opset, batch)
    axes = f"batch {'dynamic' if batch is None else batch}, size {'dynamic' if size is None else size}"
    say(f"exporting {net.plan.name} ({axes}, opset {opset}) ...")
    if size is None:
        network = torch_to_onnx(net, batch, size, opset, preprocessing.size)
    else:
        network = static_to_onnx(net, batch, size, opset, OUTPUT_NAME)
    output = Path(output)
    with staged(output) as temporary:  # renamed to output only if every check below passes
        onnx.save_model(network, temporary)
        say("checking: onnx checker, onnxruntime vs torch ...")
        onnx.checker.check_model(str(temporary), full_check=True)
        checks = check_network(temporary, net, batch, size, preprocessing.size)
        if with_preprocessing:
            network = attach_preprocessing(onnx.load(str(temporary)), preprocessing_graph(preprocessing, bgr, opset))
        elif nv12 is not None:
            network = attach_preprocessing(onnx.load(str(temporary)), front)
        onnx.save_model(write_metadata(network, metadata), temporary)
        if with_preprocessing or nv12 is not None:
            onnx.checker.check_model(str(temporary), full_check=True)
        if with_preprocessing:
            checks += check_with_preprocessing(temporary, net, preprocessing, bgr)
        elif nv12 is not None:
            checks += check_nv12(temporary, net, preprocessing, nv12, nv12_range)
        _refuse_failed(checks)
    return ExportResult(output, net.plan.name, opset, layout, checks, time.perf_counter() - started, metadata,
                        replaced)


def weights_preprocessing(net: Any) -> Preprocessing:
    """The preprocessing ``net``'s weights were made for (their entry's), else the plan's own
    evaluation size with ImageNet's defaults (random weights)."""
    entry = getattr(net, "pretrained_cfg", None)
    return entry.preprocessing if entry else Preprocessing(size=net.plan.eval_resolution)


def network_metadata(net: Any, preprocessing: Preprocessing, layout: str) -> dict[str, Any]:
    """What the file says about itself (``runtime.onnx_metadata``): architecture, weights,
    padding, preprocessing, labels and input layout."""
    entry = getattr(net, "pretrained_cfg", None)
    if entry is not None and isinstance(entry.labels, str):
        labels: str | list[str] = entry.labels
    else:
        labels = list(resolve_labels(entry.labels if entry else "imagenet1k", net.num_classes))
    return {
        "format": FORMAT,
        "arch": net.plan.name,
        "weights": entry.name if entry else "random",
        "weights_sha256": (entry.sha256 or "") if entry else "",
        "padding": net.padding.value,
        "bn_eps": net.bn_eps,
        "num_classes": net.num_classes,
        "labels": labels,
        "preprocessing": preprocessing.to_dict(),
        "input": layout,
    }
