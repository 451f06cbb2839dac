"""A Triton Inference Server model repository for an exported ONNX classifier.

Triton serves a folder laid out as::

    model_repository/
      efficientnet_lite0/
        config.pbtxt       this module writes it (protobuf text, Triton's ModelConfig)
        labels.txt         one class name per line, for Triton's classification extension
        1/model.onnx       the exported network (version 1)

The tensor names and shapes are read from the ONNX file itself, so the config always
matches what was exported. Triton does no image preprocessing: the recipe (size, crop,
mean, std) is stored as a model parameter so that clients can read it from the model's
config endpoint instead of guessing.

``effnet export --format triton`` writes it (``export_triton``: an ONNX export at a fixed
size, then the layout). ``write_model_repository`` alone needs only onnx and the standard
library (no torch, no HTTP), for files exported elsewhere.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ..._files import staged
from ...data.labels import resolve_labels
from ...errors import EffnetError, UsageError
from ..._files import check_writable
from .onnx import DEFAULT_OPSET, NATIVE_SIZE, ExportResult, OnnxSettings, export_network

#: ONNX TensorProto element types -> Triton DataType names.
ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16", 7: "TYPE_INT64", 6: "TYPE_INT32"}
KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU")
#: What ``write_model_repository`` writes in a model's folder.
MODEL_FILES = ("config.pbtxt", "labels.txt", "1/model.onnx")


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: tuple[int, ...]  # without the batch axis when the model batches


def _text(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid protobuf text string literal


def triton_config(
    name: str,
    image: Tensor,
    logits: Tensor,
    *,
    max_batch_size: int = 16,
    max_queue_delay_us: int = 5000,
    instances: int = 1,
    kind: str = "KIND_AUTO",
    label_filename: str | None = "labels.txt",
    parameters: dict[str, str] | None = None,
) -> str:
    """config.pbtxt text for an ONNX Runtime classifier with dynamic batching.

    ``max_batch_size=0`` describes a model exported with a fixed batch axis: no batching,
    and the dims are the full shapes.
    """
    check_triton_settings(max_batch_size, max_queue_delay_us, instances, kind)
    lines = [
        f"name: {_text(name)}",
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        "  {",
        f"    name: {_text(image.name)}",
        f"    data_type: {image.data_type}",
        *(["    format: FORMAT_NCHW"] if len(image.dims) == 3 else []),
        f"    dims: [ {', '.join(map(str, image.dims))} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f"    name: {_text(logits.name)}",
        f"    data_type: {logits.data_type}",
        f"    dims: [ {', '.join(map(str, logits.dims))} ]",
        *([f"    label_filename: {_text(label_filename)}"] if label_filename else []),
        "  }",
        "]",
    ]
    if max_batch_size > 0:
        preferred = [size for size in (4, 8, 16, 32, 64) if size <= max_batch_size]
        lines += ["dynamic_batching {"]
        if preferred:
            lines += [f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]"]
        lines += [f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    lines += ["instance_group [", "  {", f"    count: {instances}", f"    kind: {kind}", "  }", "]"]
    for key, value in (parameters or {}).items():
        lines += ["parameters {", f"  key: {_text(key)}", f"  value: {{ string_value: {_text(value)} }}", "}"]
    return "\n".join(lines) + "\n"


def check_triton_settings(max_batch_size: int, max_queue_delay_us: int, instances: int, kind: str) -> None:
    """Refuse what Triton would refuse in the config."""
    if kind not in KINDS:
        raise UsageError(f"instance kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if max_batch_size < 0 or instances < 1 or max_queue_delay_us < 0:
        raise UsageError("max_batch_size must be >= 0, instances >= 1 and max_queue_delay_us >= 0")


def check_model_folder(repository: str | Path, name: str) -> bool:
    """Refuse a model name that is not one folder (Triton names a model by its folder), or a
    model folder that cannot be written, naming the file; returns whether a model is there
    already (it will be replaced)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UsageError(f"{name!r} is not a model name: Triton names a model by one folder of the repository")
    folder = Path(repository) / name
    return any([check_writable(folder / file) for file in MODEL_FILES])


def onnx_io(onnx_file: str | Path) -> tuple[Tensor, Tensor, bool]:
    """(image input, logits output, whether the batch axis is dynamic) from an ONNX file."""
    try:
        model = onnx.load(str(onnx_file), load_external_data=False)
    except Exception as error:  # onnx raises several types for unreadable files
        raise EffnetError(f"{onnx_file}: not a readable ONNX model ({error})") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise EffnetError(f"{onnx_file}: expected one image input and one output, found "
                          f"{len(inputs)} and {len(model.graph.output)}")

    def describe(value: Any) -> tuple[str, str, list[int | None]]:
        tensor = value.type.tensor_type
        data_type = ONNX_TO_TRITON.get(tensor.elem_type)
        if data_type is None:
            raise EffnetError(f"{onnx_file}: tensor '{value.name}' has an element type Triton config "
                              f"generation does not handle ({tensor.elem_type})")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        return value.name, data_type, dims

    in_name, in_type, in_dims = describe(inputs[0])
    out_name, out_type, out_dims = describe(model.graph.output[0])
    if len(in_dims) != 4 or None in in_dims[1:] or in_dims[1] != 3:
        raise EffnetError(f"{onnx_file}: input '{in_name}' should be N x 3 x H x W with fixed H and W, got {in_dims}")
    if len(out_dims) != 2 or out_dims[1] is None:
        raise EffnetError(f"{onnx_file}: output '{out_name}' should be N x classes, got {out_dims}")
    dynamic = in_dims[0] is None
    if dynamic:
        return Tensor(in_name, in_type, tuple(in_dims[1:])), Tensor(out_name, out_type, (out_dims[1],)), True
    return Tensor(in_name, in_type, tuple(in_dims)), Tensor(out_name, out_type, tuple(out_dims)), False


def write_model_repository(
    repository: str | Path,
    name: str,
    onnx_file: str | Path,
    labels: Sequence[str],
    preprocessing: dict[str, Any] | None = None,
    *,
    version: int = 1,
    max_batch_size: int = 16,
    max_queue_delay_us: int = 5000,
    instances: int = 1,
    kind: str = "KIND_AUTO",
) -> Path:
    """Lay out ``repository/name/{config.pbtxt, labels.txt, VERSION/model.onnx}``; returns the model folder.

    ``preprocessing`` is ``Preprocessing.to_dict()`` of the exported weights. A model already
    there is replaced, file by file.
    """
    check_model_folder(repository, name)
    image, logits, dynamic = onnx_io(onnx_file)
    if len(labels) != logits.dims[-1]:
        raise EffnetError(f"{len(labels)} labels for a model with {logits.dims[-1]} outputs")
    parameters = {"preprocessing": json.dumps(preprocessing, sort_keys=True)} if preprocessing else None
    config = triton_config(
        name, image, logits, max_batch_size=max_batch_size if dynamic else 0,
        max_queue_delay_us=max_queue_delay_us, instances=instances, kind=kind, parameters=parameters,
    )
    folder = Path(repository) / name
    with staged(folder / str(version) / "model.onnx") as temporary:
        shutil.copyfile(onnx_file, temporary)
    with staged(folder / "labels.txt") as temporary:
        temporary.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    with staged(folder / "config.pbtxt") as temporary:  # last: Triton loads a model once its config is there
        temporary.write_text(config, encoding="utf-8")
    return folder


def export_triton(
    model: str | None,
    weights: Any,
    repository: str | Path,
    *,
    name: str | None = None,
    batch: int | None = None,
    size: int | None = None,
    opset: int = DEFAULT_OPSET,
    max_batch_size: int = 16,
    max_queue_delay_us: int = 5000,
    instances: int = 1,
    kind: str = "KIND_AUTO",
    log: Callable[[str], None] | None = None,
) -> tuple[ExportResult, Path]:
    """Export at a fixed spatial size (Triton batches requests of one shape; clients resize to
    the size in the ``preprocessing`` parameter), then lay out the model repository.

    ``size``: None for the weights' own size. Every setting and the model folder are checked
    before the export. Returns the export (checks included; ``replaced`` when a model was
    there) and the model folder (``repository/name``, ``name`` defaulting to the architecture).
    """
    from ...runtime.torch_engine import TorchEngine  # torch: only once an export really runs

    if str(repository).endswith(".onnx"):
        raise UsageError(f"with --format triton, --output is the model repository folder, not a .onnx file: "
                         f"{repository}")
    if max_batch_size < 1 and batch is None:
        raise UsageError("--max-batch must be at least 1 (or export a fixed --batch)")
    check_triton_settings(max_batch_size, max_queue_delay_us, instances, kind)
    OnnxSettings(batch=batch, size=size or NATIVE_SIZE, opset=opset)  # refuses bad settings before loading
    if name is not None:
        check_model_folder(repository, name)  # before loading the weights, when it can be
    engine = TorchEngine.load(model, weights, channels_last=False)
    name = name or engine.arch
    replaced = check_model_folder(repository, name)
    with tempfile.TemporaryDirectory(prefix="effnet-triton-") as folder:
        result = export_network(engine.model, Path(folder) / "model.onnx", batch=batch, size=size or NATIVE_SIZE,
                                opset=opset, log=log)
        labels = resolve_labels(result.metadata["labels"], result.metadata["num_classes"])
        model_folder = write_model_repository(
            repository, name, result.path, labels, result.metadata["preprocessing"],
            max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us, instances=instances, kind=kind,
        )
    result.path = model_folder / "1" / "model.onnx"  # the temporary export is gone; this is its copy
    result.replaced = replaced
    return result, model_folder
