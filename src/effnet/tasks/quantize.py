"""``effnet quantize``: parse options, quantize (``deploy.quantize``), write the JSON report,
print it as markdown."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .._files import check_writable, staged
from ..deploy.quantize.pipeline import quantize
from ..deploy.quantize.recipe import AUTO_FLOAT_MACS, AUTO_MAX_FLOAT, AUTO_MIN_GAIN, METHODS, WEIGHT_KINDS
from ..deploy.quantize.report import markdown
from ..errors import UsageError
from ..options import add_options, image_size, keyword_or_int, positive_int

DESCRIPTION = (
    "Quantize an exported ONNX model to int8 (static, per-channel weights) with calibration images, "
    "keep the most sensitive layers float, and report fp32 vs int8 agreement, accuracy, size and speed."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="float ONNX file from `effnet export` (its metadata gives the preprocessing)")
    parser.add_argument("--calib", required=True, metavar="DIR",
                        help="folder of calibration images (searched recursively; unreadable files are skipped)")
    parser.add_argument("--output", "-o", required=True,
                        help="the int8 file to write: .onnx (onnxruntime), .xml + .bin (--engine openvino)")
    parser.add_argument("--engine", choices=("onnxruntime", "openvino"), default="onnxruntime",
                        help="the engine the int8 file is for; openvino: NNCF's post-training quantization to an "
                             "OpenVINO IR (run it with --engine openvino --precision int8); the options below "
                             "from --method on are onnxruntime's")
    parser.add_argument("--calib-images", "--num-images", dest="num_images", type=positive_int, default=1000,
                        metavar="N", help="calibration images to use, spread over the folder (or all there are, "
                                          "when fewer); the same option as export's and bench's")
    parser.add_argument("--method", choices=METHODS, default="percentile",
                        help="activation range calibration (percentile: the 99.999th; minmax and entropy agreed "
                             "less with fp32 on Lite0)")
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                        help="one weight scale per output channel")
    parser.add_argument("--keep-float", type=keyword_or_int("auto", 0, "auto"), default="auto", metavar="K|auto",
                        help=f"keep the K most sensitive layers float (of those onnxruntime really runs float); "
                             f"auto: up to {AUTO_MAX_FLOAT} layers holding at most {100 * AUTO_FLOAT_MACS:g}%% of the "
                             f"multiply-adds and of the weights, each kept only if it cuts the error by "
                             f"{100 * AUTO_MIN_GAIN:g}%%")
    parser.add_argument("--gemm-weights", choices=("auto",) + WEIGHT_KINDS, default="auto",
                        help="weights of the GEMM layers (1x1/full convs, classifier): s8 8-bit, s7 7-bit, "
                             "u8 uint8 (slow u8u8 kernels), s8-safe 8-bit scaled so onnxruntime's AVX2 kernels "
                             "cannot saturate; auto: s8-safe on every CPU (a file built with s8 on a VNNI CPU "
                             "saturates on AVX2-only ones)")
    parser.add_argument("--size", type=image_size, default=None, metavar="PIXELS",
                        help="input height and width the int8 file is built for (it is fixed there; "
                             "default: the model's preprocessing size)")
    parser.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=True,
                        help="fold the mean error of weight rounding into the biases")
    parser.add_argument("--eval", metavar="DIR", default=None,
                        help="images to compare fp32 and int8 on: class sub-folders or --eval-labels give "
                             "accuracy, a flat folder agreement only (default: the calibration images)")
    parser.add_argument("--eval-labels", metavar="FILE", default=None,
                        help="`filename label[,label]` lines for the --eval images (effnet eval's format)")
    add_options(parser, "threads")
    parser.add_argument("--no-speed", action="store_true", help="skip the latency/throughput measurement")
    parser.add_argument("--report", default=None, metavar="FILE",
                        help="JSON report (default: the output with .json instead of .onnx)")
    add_options(parser, "no_progress")


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if args.engine == "openvino":
        from ..deploy.quantize.openvino import quantize_openvino

        if output.suffix != ".xml":
            raise UsageError(f"--output should end in .xml for --engine openvino: {output}")
        check_writable(output)
        quantize_openvino(args.model, args.calib, output, num_images=args.num_images, size=args.size)
        print(f"wrote {output} and {output.with_suffix('.bin')}")
        return 0
    if output.suffix != ".onnx":
        raise UsageError(f"--output should end in .onnx: {output}")
    if args.eval_labels and not args.eval:
        raise UsageError("--eval-labels needs --eval DIR")
    report_path = Path(args.report) if args.report else output.with_suffix(".json")
    for other, what in ((output, "the int8 file"), (Path(args.model), "the float model")):
        if report_path.resolve() == other.resolve():
            raise UsageError(f"--report {report_path} is {what}; give the report another name")
    check_writable(output)  # before the run, not after it; the output first: the user named it
    report_replaced = check_writable(report_path)
    result = quantize(
        args.model, args.calib, output, num_images=args.num_images, method=args.method, per_channel=args.per_channel,
        keep_float=args.keep_float, gemm_weights=args.gemm_weights,
        bias_correction=args.bias_correction, size=args.size, eval_dir=args.eval, eval_labels=args.eval_labels,
        threads=args.threads, speed=not args.no_speed, progress=not args.no_progress,
        log=lambda message: print(message, file=sys.stderr),
    )
    with staged(report_path) as temporary:
        temporary.write_text(json.dumps(result.report, indent=2))
    print(markdown(result.report))
    print()
    for path, replaced in ((output, result.replaced), (report_path, report_replaced)):
        if replaced:
            print(f"replaced {path}")
    print(f"wrote {output} and {report_path}")
    return 0
