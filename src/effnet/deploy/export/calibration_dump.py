"""The calibration hand-off: an exported file's calibration set in the forms vendor compilers read.

NPU compilers quantize an ONNX file themselves and want the calibration images already
preprocessed, one file per image: RDK X5's hb_mapper reads every file of ``cal_data_dir`` as
raw bytes (``cal_data_type: float32`` RGB NCHW, before normalization when its yaml says
``norm_type: data_mean_and_scale``); TensorRT calibrators, Ascend ATC and most others read
``.npy`` or ``.bin`` tensors of the network's input. VastAI's vamc preprocesses JPEGs itself
and asks for about 1000 images that cover every class. So the images are picked class by class
(a class is the sub-folder an image sits in, or, in a flat folder, the exported model's own
top-1 on it), prepared with the file's own recipe (read from its metadata, so the set cannot
drift from the model), and written as::

    DIR/data/00000_<name>.npy|.bin|<original suffix>   one tensor (or image) per picked image
    DIR/list.txt                                        the data files, one per line (data/...)
    DIR/manifest.json                                   shape, dtype, layout, values, recipe, classes

``values``: ``input`` is exactly what the exported graph takes (normalized float32 NCHW, or
uint8 NV12 frames for ``--input nv12`` files); ``pixels`` is the resized and cropped RGB crop
on the 0-255 scale, for compilers that put normalization into the model themselves.
The folder appears whole or not at all (written beside it, then renamed).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._progress import progress as progress_bar
from ...data.images import ImageError, find_images, load_image
from ...errors import UsageError
from ...runtime.onnx_metadata import INPUT_FLOAT, INPUT_NV12
from ...runtime.onnxruntime_engine import OnnxRuntimeEngine

FORMATS = ("npy", "bin", "image")
VALUES = ("input", "pixels")
LAYOUTS = ("nchw", "nhwc")
DTYPES = ("float32", "uint8")
#: VastAI's document: "any 1000 images of the validation set, every class present"
DEFAULT_COUNT = 1000
#: images classified per onnxruntime run when a flat folder is grouped by the model's top-1
_BATCH = 16


@dataclass
class CalibrationDump:
    """What was written: the folder, its data files, and how the classes were covered."""

    folder: Path
    files: list[str]
    grouping: str
    classes: int
    covered: int
    shape: list[int]
    dtype: str
    skipped: list[str] = field(default_factory=list)
    replaced: bool = False


def _check_choices(file_format: str, values: str, layout: str | None, dtype: str | None, count: int) -> None:
    for option, value, choices in (("--calib-format", file_format, FORMATS), ("--calib-values", values, VALUES),
                                   ("--calib-layout", layout, LAYOUTS), ("--calib-dtype", dtype, DTYPES)):
        if value is not None and value not in choices:
            raise UsageError(f"{option} must be one of {', '.join(choices)}, not {value!r}")
    if count < 1:
        raise UsageError(f"--calib-count must be at least 1, not {count}")


def check_folders(images: str | os.PathLike, output: str | os.PathLike) -> bool:
    """Refuse a missing image folder, or an output folder that holds something other than an
    earlier dump (before any slow work); True when an earlier dump will be replaced."""
    if not Path(images).is_dir():
        raise UsageError(f"{images}: calibration image folder not found")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output}: exists and is not a folder (--calib-dump takes a folder)")
    if output.is_dir() and any(output.iterdir()):
        if not (output / "manifest.json").is_file():
            raise UsageError(f"{output}: folder is not empty and holds no earlier calibration dump; "
                             "choose an empty or new folder")
        return True
    return False


def class_groups(paths: list[Path], root: Path,
                 classify: Callable[[list[Path]], list[str]]) -> tuple[str, dict[str, list[Path]]]:
    """Images per class: by sub-folder when ``root`` has class folders, else by ``classify``."""
    in_folders = [p for p in paths if p.parent != root]
    groups: dict[str, list[Path]] = {}
    if in_folders:
        for path in paths:
            key = path.relative_to(root).parts[0] if path.parent != root else "."
            groups.setdefault(key, []).append(path)
        return "sub-folder", groups
    for path, key in zip(paths, classify(paths)):
        if key:
            groups.setdefault(key, []).append(path)
    return "model top-1", groups


def pick_covering(groups: dict[str, list[Path]], count: int) -> list[tuple[str, Path]]:
    """Up to ``count`` (class, image) pairs, class by class in turn, so that every class gets
    one before any gets two; within a class the images are spread over its sorted listing."""
    order = sorted(groups)
    per_class = {key: [] for key in order}
    quota = {key: 0 for key in order}
    remaining = min(count, sum(len(v) for v in groups.values()))
    while remaining:
        for key in order:
            if remaining and quota[key] < len(groups[key]):
                quota[key] += 1
                remaining -= 1
    for key in order:
        members, wanted = groups[key], quota[key]
        per_class[key] = [members[i * len(members) // wanted] for i in range(wanted)] if wanted else []
    picks = []
    for rank in range(max(quota.values(), default=0)):
        picks += [(key, per_class[key][rank]) for key in order if rank < quota[key]]
    return picks


def dump_calibration(
    model_path: str | os.PathLike,
    images: str | os.PathLike,
    output: str | os.PathLike,
    *,
    count: int = DEFAULT_COUNT,
    file_format: str = "npy",
    values: str = "input",
    layout: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> CalibrationDump:
    """Write the calibration set of the exported file ``model_path`` from the images under
    ``images`` into the folder ``output`` (see the module docstring for the forms)."""
    _check_choices(file_format, values, layout, dtype, count)
    root, output = Path(images), Path(output)
    replaced = check_folders(root, output)
    engine = OnnxRuntimeEngine.load(None, str(model_path), threads=threads)
    convert, shape, out_dtype = _converter(engine, values, layout, dtype, file_format)
    paths = find_images(root)
    if not paths:
        raise UsageError(f"{root}: no images in the calibration folder (looked for .jpg, .png, .bmp, .webp, .tif ...)")
    skipped: list[str] = []
    grouping, groups = class_groups(paths, root, lambda found: _top1(engine, found, skipped, progress))
    if not groups:
        raise UsageError(f"{root}: none of the {len(paths)} calibration images can be read ({'; '.join(skipped[:2])})")
    picks = pick_covering(groups, count)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (staging / "data").mkdir()
        files, classes, sources = [], [], []
        for index, (key, path) in enumerate(progress_bar(picks, desc="writing calibration set", unit="img",
                                                         enabled=progress)):
            name = f"data/{index:05d}_{path.stem}"
            if file_format == "image":
                name += path.suffix  # as it was: vamc samples by suffix (JPEG)
                shutil.copyfile(path, staging / name)
            else:
                try:
                    tensor = convert(load_image(path))
                except ImageError as error:
                    skipped.append(str(error))
                    continue
                name += f".{file_format}"
                if file_format == "npy":
                    np.save(staging / name, tensor)
                else:
                    tensor.tofile(staging / name)
            files.append(name)
            classes.append(key)
            sources.append(str(path.relative_to(root)))
        if not files:
            raise UsageError(f"{root}: none of the picked calibration images can be read ({'; '.join(skipped[:2])})")
        (staging / "list.txt").write_text("".join(f"{name}\n" for name in files))
        manifest = _manifest(engine, grouping, groups, files, classes, sources, values, layout, shape, out_dtype,
                             file_format)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(staging, 0o777 & ~_umask())
        if replaced:
            shutil.rmtree(output)
        elif output.is_dir():
            output.rmdir()
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    covered = len(set(classes))
    return CalibrationDump(output, files, grouping, len(groups), covered, shape, out_dtype, skipped, replaced)


def _umask() -> int:
    from ..._files import current_umask

    return current_umask()


def _converter(engine: OnnxRuntimeEngine, values: str, layout: str | None, dtype: str | None,
               file_format: str) -> tuple[Callable[[np.ndarray], np.ndarray], list[int], str]:
    """(decoded RGB image -> the tensor to write, its shape, its dtype) for these choices."""
    recipe = engine.preprocessing
    size = recipe.size
    if file_format == "image":
        if layout or dtype or values != "input":
            raise UsageError("--calib-format image copies the picked images as they are: --calib-values, "
                             "--calib-layout and --calib-dtype do not apply")
        return (lambda image: image), [], "image"
    if values == "pixels":
        out = dtype or "float32"
        channels_last = layout == "nhwc"

        def pixels(image: np.ndarray) -> np.ndarray:
            crop = _crop(engine, image)
            crop = crop if channels_last else crop.transpose(2, 0, 1)
            return np.ascontiguousarray(crop[None], dtype=out)

        return pixels, [1, size, size, 3] if channels_last else [1, 3, size, size], out
    if engine.input_layout == INPUT_NV12:
        if layout or dtype not in (None, "uint8"):
            raise UsageError("this file takes NV12 frames: --calib-values input writes them as uint8 "
                             "[1, H*3/2, W] (--calib-layout and --calib-dtype float32 do not apply)")
        frame_shape = [1, *engine.session.get_inputs()[0].shape[1:]]
        return (lambda image: engine.nv12_frame(image)[None]), frame_shape, "uint8"
    if engine.input_layout != INPUT_FLOAT:
        raise UsageError("this file preprocesses images of any size inside the graph; a calibration set needs a "
                         "fixed input: use --calib-values pixels, or export without --with-preprocessing")
    if dtype not in (None, "float32"):
        raise UsageError("--calib-values input is the network's float32 input; uint8 needs --calib-values pixels")

    def network_input(image: np.ndarray) -> np.ndarray:
        tensor = recipe(image)
        return np.ascontiguousarray((tensor.transpose(1, 2, 0) if layout == "nhwc" else tensor)[None], np.float32)

    return network_input, [1, size, size, 3] if layout == "nhwc" else [1, 3, size, size], "float32"


def _crop(engine: OnnxRuntimeEngine, image: np.ndarray) -> np.ndarray:
    """The resized, cropped RGB crop (uint8 HxWx3) the file's recipe makes of ``image``."""
    from ...data.transforms import Preprocessing

    return Preprocessing.from_dict(engine.preprocessing.to_dict()).resize_crop(image)


def _top1(engine: OnnxRuntimeEngine, paths: list[Path], skipped: list[str], progress: bool) -> list[str]:
    """The model's class name for each image ('' for those that cannot be read)."""
    keys = [""] * len(paths)
    for start in progress_bar(range(0, len(paths), _BATCH), desc="grouping calibration images by top-1",
                              unit="batch", enabled=progress):
        arrays, positions = [], []
        for position in range(start, min(start + _BATCH, len(paths))):
            try:
                arrays.append(engine.preprocessing(load_image(paths[position])))
                positions.append(position)
            except ImageError as error:
                skipped.append(str(error))
        if arrays:
            for position, row in zip(positions, engine(engine.collate(arrays))):
                keys[position] = str(engine.labels[int(np.argmax(row))])
    return keys


def _manifest(engine: OnnxRuntimeEngine, grouping: str, groups: dict[str, list[Path]], files: list[str],
              classes: list[str], sources: list[str], values: str, layout: str | None, shape: list[int], dtype: str,
              file_format: str) -> dict[str, Any]:
    recipe = engine.preprocessing
    kind = "nv12" if engine.input_layout == INPUT_NV12 and values == "input" else (layout or "nchw")
    return {
        "model": {"arch": engine.arch, "weights": engine.weights_name, "input": engine.input_layout},
        "format": file_format, "values": values, "layout": None if file_format == "image" else kind,
        "shape": shape, "dtype": dtype,
        "mean": list(recipe.mean), "std": list(recipe.std),
        "mean_255": [round(255 * m, 6) for m in recipe.mean],
        "scale_255": [round(1 / (255 * s), 8) for s in recipe.std],
        "preprocessing": recipe.to_dict(),
        "grouping": grouping, "classes": len(groups), "covered": len(set(classes)),
        "images": [{"file": name, "class": key, "source": source}
                   for name, key, source in zip(files, classes, sources)],
    }

