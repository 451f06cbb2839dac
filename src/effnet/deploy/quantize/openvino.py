"""int8 for OpenVINO: an exported float ONNX file to an int8 OpenVINO IR, with NNCF.

NNCF's post-training quantization (``nncf.quantize``) inserts FakeQuantize nodes that
OpenVINO's CPU plugin fuses into int8 kernels, SiLU and squeeze-excitation included (where
onnxruntime has no int8 SiLU, so B0 stays mostly float there). The calibration images are
chosen and prepared exactly as for ``effnet quantize`` (``calibration.select_images``,
``load_crops``, ``normalize``: the model's own preprocessing from its metadata); the IR keeps
the float file's metadata plus ``quantization`` (engine, source file, images), which is how
the OpenVINO engine knows the file is int8. The IR's weights are saved uncompressed
(``compress_to_fp16=False``): fp16 storage would change the float layers' answers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..._files import check_writable, staged
from ..._quiet import quiet
from ...runtime.openvino_engine import QUANTIZED_FOR, file_metadata, read_model, set_file_metadata
from .calibration import load_crops, normalize, select_images
from .recipe import QuantizeError

#: NNCF's default subset size; more images move the ranges little (NNCF's documentation).
DEFAULT_IMAGES = 300


def quantize_openvino(model: str | os.PathLike, calib: str | os.PathLike, output: str | os.PathLike, *,
                      num_images: int = DEFAULT_IMAGES, size: int | None = None) -> Path:
    """Quantize the float ``model`` (``.onnx`` from ``effnet export``) to the int8 IR
    ``output`` (``.xml``, with its ``.bin`` beside it), calibrated on up to ``num_images``
    images of ``calib`` at ``size`` (default: the model's preprocessing size). Both files
    are written whole or not at all; returns ``output``."""
    import nncf
    import openvino as ov

    from ...data.transforms import Preprocessing

    output = Path(output)
    if output.suffix.lower() != ".xml":
        raise QuantizeError(f"{output}: an OpenVINO IR is a .xml file (its weights go to a .bin beside it)")
    check_writable(output)
    core = ov.Core()
    network = read_model(core, model)
    metadata = file_metadata(network)
    if "quantization" in metadata:
        raise QuantizeError(f"{model} is quantized already: quantize the float file it was made from")
    preprocessing = Preprocessing.from_dict(metadata.get("preprocessing") or {"size": size or 224})
    if size is not None:
        preprocessing = preprocessing.with_size(size)
    crops, used, _ = load_crops(select_images(calib, num_images), preprocessing)
    inputs = normalize(crops, preprocessing)
    side = preprocessing.size
    network.reshape({network.inputs[0]: ov.PartialShape([-1, 3, side, side])})
    dataset = nncf.Dataset(list(inputs), lambda image: image[None])
    with quiet():  # NNCF draws its own progress bars (rich) on stdout: effnet's output stays effnet's
        quantized = nncf.quantize(network, dataset, subset_size=len(inputs),
                                  model_type=None, preset=nncf.QuantizationPreset.PERFORMANCE)
    set_file_metadata(quantized, {
        "preprocessing": preprocessing.to_dict(),
        "quantization": {"engine": QUANTIZED_FOR, "tool": f"nncf {nncf.__version__}", "source": str(model),
                         "calibration_images": len(used), "size": side},
    })
    _save(quantized, output)
    return output


def _save(network: Any, output: Path) -> None:
    """The IR pair written in a scratch folder, then each file moved into place whole."""
    import openvino as ov

    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".effnet-ir-") as scratch:
        ov.save_model(network, str(Path(scratch) / output.name), compress_to_fp16=False)
        for made in (output.with_suffix(".bin"), output):  # the .xml last: it names the .bin
            with staged(made) as temporary:
                shutil.move(str(Path(scratch) / made.name), temporary)
