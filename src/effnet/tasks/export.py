"""``effnet export``: parse options, export (``deploy.export``), print the checks and the file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..data.nv12 import RANGES
from ..deploy.export import calibration_dump as calibration
from ..deploy.export.calibration_dump import CalibrationDump
from ..deploy.export.nv12_graph import parse_frame_size
from ..deploy.export.onnx import (DEFAULT_OPSET, DYNAMIC_MIN_OPSET, MAX_OPSET, MIN_OPSET, NATIVE_SIZE, ExportResult,
                                  export)
from ..deploy.export.executorch import export_executorch
from ..deploy.export.tflite import INT8_INPUTS, TfliteExportResult, export_tflite
from ..deploy.export.tflite_int8 import DEFAULT_FLOAT_LAYERS
from ..deploy.export.triton import KINDS, export_triton
from ..errors import UsageError
from ..options import add_options, keyword_or_int, keyword_or_size, non_negative_int, positive_int

DESCRIPTION = (
    "Export a model to ONNX (--format onnx), a Triton Inference Server model repository (triton), a "
    "LiteRT/TFLite file (tflite) or an ExecuTorch program (executorch). The file is checked right after export "
    "(in onnxruntime, the LiteRT interpreter or ExecuTorch's runtime, against torch's logits) and carries its "
    "architecture, preprocessing and labels."
)

FORMATS = ("onnx", "triton", "tflite", "executorch")
#: the --format triton options and their values when not given (None marks "not given", so a
#: plain ONNX export can refuse them instead of ignoring them)
TRITON_DEFAULTS = {"name": None, "max_batch": 16, "max_queue_delay_us": 5000, "instances": 1, "kind": "KIND_AUTO"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(parser, "model", "weights", "no_progress")
    parser.add_argument("--output", "-o", required=True,
                        help="the .onnx file to write; with --format triton, the model repository folder")
    parser.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx: one .onnx file; triton: a Triton Inference Server model repository "
                             "(NAME/config.pbtxt, NAME/labels.txt, NAME/1/model.onnx) for the onnxruntime "
                             "backend with dynamic batching; tflite: one .tflite file for LiteRT (batch 1, the "
                             "weights' own size), checked in the LiteRT interpreter (needs effnet[tflite]); "
                             "executorch: one .pte program with the XNNPACK delegate (batch 1, the weights' own "
                             "size), checked in ExecuTorch's runtime (needs effnet[executorch])")
    parser.add_argument("--batch", type=keyword_or_int("dynamic", 1, None), default=None, metavar="dynamic|N",
                        help="batch axis: dynamic or a fixed size (default: dynamic)")
    parser.add_argument("--size", type=keyword_or_size("dynamic"), default=None, metavar="dynamic|S",
                        help="input height and width: dynamic (TF-'same' padding follows the input) or a fixed "
                             "size; with --with-preprocessing, the network size (default: dynamic; the weights' "
                             "own size with --with-preprocessing or --format triton)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {MIN_OPSET}-{MAX_OPSET}; below {DYNAMIC_MIN_OPSET} the size is fixed (the "
                             "weights' own unless --size says otherwise). Fixed sizes give static graphs: TF-'same' "
                             "padding folded into each Conv, no Shape/Pad ops (for NPU compilers, TensorRT, OpenVINO)")
    parser.add_argument("--with-preprocessing", action="store_true",
                        help="the graph takes uint8 NHWC RGB images of any size and resizes, crops and "
                             "normalizes inside (the weights' own recipe)")
    parser.add_argument("--bgr", action="store_true", help="with --with-preprocessing: the input is BGR (OpenCV)")
    parser.add_argument("--input", choices=("float", "nv12"), default="float",
                        help="nv12: the graph takes NV12 camera frames of --input-size, uint8 [N, H*3/2, W] (Y plane, "
                             "then interleaved UV), and converts (BT.601), resizes, crops and normalizes inside, at "
                             "any opset (default: float, the network's own NCHW input)")
    parser.add_argument("--input-size", metavar="HxW",
                        help="with --input nv12: the frame's height x width, both even (default: the weights' "
                             "own size, square)")
    parser.add_argument("--nv12-range", choices=RANGES, default="video",
                        help="with --input nv12: BT.601 video range (Y 16-235, as OpenCV and most cameras) or full "
                             "range (0-255) (default: video)")
    calib = parser.add_argument_group("the calibration hand-off to vendor compilers (see docs/deploy.md)")
    calib.add_argument("--calib", metavar="IMAGES_DIR",
                       help="calibration images: class sub-folders, or a flat folder (then grouped by the model's "
                            "top-1)")
    calib.add_argument("--calib-dump", metavar="DIR",
                       help="after the export, write the calibration set for the exported file: DIR/data/ (one "
                            "file per image), DIR/list.txt, DIR/manifest.json; every class present is covered")
    calib.add_argument("--calib-count", type=positive_int, default=calibration.DEFAULT_COUNT, metavar="N",
                       help=f"images to pick (default: {calibration.DEFAULT_COUNT}, as VastAI's document asks)")
    calib.add_argument("--calib-format", choices=calibration.FORMATS, default="npy",
                       help="npy (numpy), bin (raw bytes, hb_mapper's cal_data_dir) or image (copies of the picked "
                            "images, for vamc, which preprocesses itself) (default: npy)")
    calib.add_argument("--calib-values", choices=calibration.VALUES, default="input",
                       help="input: exactly the exported graph's input (normalized float32, or NV12 frames); "
                            "pixels: the resized, cropped RGB on the 0-255 scale, for compilers that normalize "
                            "inside (hb_mapper's norm_type data_mean_and_scale) (default: input)")
    calib.add_argument("--calib-layout", choices=calibration.LAYOUTS, help="nchw or nhwc (default: nchw)")
    calib.add_argument("--calib-dtype", choices=calibration.DTYPES,
                       help="float32 or uint8 (uint8 with --calib-values pixels only; default: float32, uint8 for "
                            "NV12 frames)")
    tflite = parser.add_argument_group("with --format tflite")
    tflite.add_argument("--int8", action="store_true",
                        help="int8 (int8 activations, per-channel int8 weights), calibrated on the --calib images")
    tflite.add_argument("--calib-images", type=positive_int, default=100, metavar="N",
                        help="with --int8: at most N calibration images, spread over the folder")
    tflite.add_argument("--int8-input", choices=INT8_INPUTS, default="uint8",
                        help="with --int8: uint8 pixels resized and cropped, normalized inside (as Google's int8 "
                             "EfficientNet-Lite files), or the fp32 file's normalized float32 (default: uint8)")
    tflite.add_argument("--int8-float-layers", type=int, default=DEFAULT_FLOAT_LAYERS, metavar="N",
                        help="with --int8: keep the first N convolutions (stem first) float; 0 makes a full-integer "
                             "file, which NPUs and the Edge TPU need (default: 2, the stem and the first block's "
                             "conv: on Lite0 95.1%% top-1 agreement with fp32 vs 94.4%% for 0, at the same speed)")
    triton = parser.add_argument_group("with --format triton")
    triton.add_argument("--name", help="the model's name in the repository (default: the architecture)")
    triton.add_argument("--max-batch", type=int, metavar="N", help="Triton's max_batch_size for dynamic batching "
                        f"(default: {TRITON_DEFAULTS['max_batch']}; needs --batch dynamic)")
    triton.add_argument("--max-queue-delay-us", type=non_negative_int, metavar="US", help="how long Triton waits to fill a batch, in "
                        f"microseconds (default: {TRITON_DEFAULTS['max_queue_delay_us']})")
    triton.add_argument("--instances", type=positive_int, metavar="N",
                        help=f"model instances per device (default: {TRITON_DEFAULTS['instances']})")
    triton.add_argument("--kind", choices=KINDS,
                        help=f"where Triton runs the instances (default: {TRITON_DEFAULTS['kind']})")


def run(args: argparse.Namespace) -> int:
    if args.format == "triton":
        return run_triton(args)
    if args.format == "tflite":
        return run_tflite(args)
    if args.format == "executorch":
        return run_executorch(args)
    if args.int8:
        raise UsageError("--int8 applies with --format tflite only (ONNX int8: effnet quantize)")
    given = [option for option in TRITON_DEFAULTS if getattr(args, option) is not None]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} applies with --format triton only")
    if not str(args.output).endswith(".onnx"):
        raise UsageError(f"--output should end in .onnx: {args.output}")
    _check_calibration(args)
    result = export(
        args.model, args.weights, args.output, batch=args.batch, size=args.size, opset=args.opset,
        with_preprocessing=args.with_preprocessing, bgr=args.bgr, nv12=_nv12_frame(args), nv12_range=args.nv12_range,
        log=_log,
    )
    report(result)
    report_written(result, f"{result.arch}, opset {result.opset}, input {result.input_layout}")
    if args.calib_dump:
        report_dump(calibration.dump_calibration(
            result.path, args.calib, args.calib_dump, count=args.calib_count, file_format=args.calib_format,
            values=args.calib_values, layout=args.calib_layout, dtype=args.calib_dtype,
            progress=not args.no_progress,
        ))
    return 0


def _check_calibration(args: argparse.Namespace) -> None:
    """The calibration options belong together; refuse them apart, before the export runs."""
    if args.calib_dump and not args.calib:
        raise UsageError("--calib-dump needs --calib IMAGES_DIR (the images to pick from)")
    if args.calib and not args.calib_dump:
        raise UsageError("--calib needs --calib-dump DIR (where to write the calibration set)")
    if args.calib_dump:
        calibration.check_folders(args.calib, args.calib_dump)


def report_dump(dump: CalibrationDump) -> None:
    """What the calibration folder holds and how well it covers the classes."""
    for problem in dump.skipped[:3]:
        print(f"skipped: {problem}")
    if dump.replaced:
        print(f"replaced {dump.folder}")
    kind = "" if dump.dtype == "image" else f" of {dump.dtype} {'x'.join(map(str, dump.shape))}"
    print(f"wrote calibration set {dump.folder}: {len(dump.files)} files{kind}, {dump.covered} of {dump.classes} "
          f"classes covered (grouped by {dump.grouping}); list.txt, manifest.json")


def _nv12_frame(args: argparse.Namespace) -> tuple[int, int] | str | None:
    """The NV12 frame size, or None for other inputs (which refuse the nv12 options)."""
    if args.input != "nv12":
        if args.input_size is not None or args.nv12_range != "video":
            raise UsageError("--input-size and --nv12-range apply with --input nv12 only")
        return None
    return parse_frame_size(args.input_size) if args.input_size else NATIVE_SIZE


def run_triton(args: argparse.Namespace) -> int:
    if args.with_preprocessing:
        raise UsageError("--format triton exports the network alone: Triton batches tensors of one shape, and "
                         "in-graph preprocessing takes images of any size (clients preprocess as the config's "
                         "'preprocessing' parameter says)")
    options = {option: default if getattr(args, option) is None else getattr(args, option)
               for option, default in TRITON_DEFAULTS.items()}
    result, model_folder = export_triton(
        args.model, args.weights, args.output, name=options["name"], batch=args.batch, size=args.size,
        opset=args.opset, max_batch_size=options["max_batch"], max_queue_delay_us=options["max_queue_delay_us"],
        instances=options["instances"], kind=options["kind"], log=_log,
    )
    report(result)
    if result.replaced:
        print(f"replaced {model_folder}")
    print(f"wrote Triton model repository {args.output} (model {model_folder.name}: config.pbtxt, labels.txt, "
          f"1/model.onnx)")
    return 0


def _onnx_graph_options(args: argparse.Namespace) -> list[str]:
    """The options given that shape an ONNX graph only (batch 1 at the weights' own size is what
    the tflite and executorch files are)."""
    return [flag for flag, given in (("--batch", args.batch is not None), ("--size", args.size is not None),
                                     ("--opset", args.opset != DEFAULT_OPSET),
                                     ("--with-preprocessing", args.with_preprocessing), ("--bgr", args.bgr))
            if given]


def run_tflite(args: argparse.Namespace) -> int:
    if not str(args.output).endswith(".tflite"):
        raise UsageError(f"--output should end in .tflite: {args.output}")
    onnx_only = _onnx_graph_options(args)
    if onnx_only:
        raise UsageError(f"{onnx_only[0]} does not apply to --format tflite (batch 1 at the weights' own size)")
    if args.calib and not args.int8:
        raise UsageError("--calib applies to --format tflite with --int8 (or to ONNX with --calib-dump)")
    if args.calib_dump or args.input != "float":
        raise UsageError("--calib-dump and --input nv12 apply to ONNX exports only")
    result = export_tflite(args.model, args.weights, args.output, int8=args.int8, calibration=args.calib,
                           num_images=args.calib_images, int8_input=args.int8_input,
                           float_layers=args.int8_float_layers, log=_log)
    report_tflite(result)
    report_written(result, f"{result.arch}, {result.precision}, input {result.input_layout}")
    return 0


def run_executorch(args: argparse.Namespace) -> int:
    if not str(args.output).endswith(".pte"):
        raise UsageError(f"--output should end in .pte: {args.output}")
    given = _onnx_graph_options(args) + [
        flag for flag, set_ in (("--int8", args.int8), ("--calib", args.calib is not None),
                                ("--calib-dump", args.calib_dump is not None), ("--input", args.input != "float"))
        if set_]
    if given:
        raise UsageError(f"{given[0]} does not apply to --format executorch (fp32, batch 1 at the weights' own size)")
    result = export_executorch(args.model, args.weights, args.output, log=_log)
    report_checks(result.checks, "executorch")
    report_written(result, f"{result.arch}, fp32, XNNPACK")
    return 0


def report_written(result: Any, what: str) -> None:
    """The last lines of every export: the file it replaced, if any, and what it wrote."""
    if result.replaced:
        print(f"replaced {result.path}")
    size_mb = result.path.stat().st_size / 1e6
    print(f"wrote {result.path} ({size_mb:.1f} MB, {what}) in {result.seconds:.0f} s")


def report_checks(checks: list[dict[str, Any]], engine: str) -> None:
    """The file run in ``engine`` against torch, one line per check."""
    for check in checks:
        print(f"check {check['what']:<14} input {'x'.join(map(str, check['shape'])):<14} max |{engine} - torch| = "
              f"{check['max_abs_diff']:.2e} (tolerance {check['tolerance']:g}), same top-1: "
              f"{'yes' if check['same_top1'] else 'no'}")


def report_tflite(result: TfliteExportResult) -> None:
    """The fp32 check against torch and, for int8, the agreement on the calibration images."""
    report_checks(result.checks, "litert")
    if result.agreement is not None:
        print(f"int8 top-1 agreement with torch fp32: {100 * result.agreement:.1f}% on the {result.compared} "
              "calibration images")


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def report(result: ExportResult) -> None:
    """The checks made on the exported graph, one line each."""
    for check in result.checks:
        extra = f", same top-1: {'yes' if check['same_top1'] else 'no'}" if "same_top1" in check else ""
        print(f"check {check['what']:<18} input {'x'.join(map(str, check['shape'])):<15} "
              f"max |onnxruntime - torch| = {check['max_abs_diff']:.2e} (tolerance {check['tolerance']:g}{extra})")
