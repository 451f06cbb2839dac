"""int8 vs fp32 onnxruntime, measured in one run: speed, agreement, accuracy, per-op time share.

Models (there are no real EfficientNet-B0 ImageNet weights offline, so B0 is measured on a
task it was really trained for):

- ``lite0``: EfficientNet-Lite0 with its real ImageNet weights. Calibrated on 120 random
  crops/flips of the real photos (``onnx_photos.py``), compared on the 24 photos plus 72
  other crops of them, accuracy on the 10 hand-labelled photos.
- ``b0_digits``: EfficientNet-B0 trained from scratch on scikit-learn's digits
  (``onnx_b0_weights.digits``, trained here on the first run and cached), calibrated on 300
  training digits, compared and scored on the 360 held-out digits.
- ``lite0_digits`` (with ``--lite0-digits FILE``): a Lite0 digits fine-tune from
  ``effnet train --config digits_finetune_lite0.yaml``, scored on its validation split.

Speed is always measured at 224x224 (the ImageNet size; the digits models run at any size),
batch 1 latency and batch 16 throughput, at ``--threads`` (2), fp32 and int8 interleaved in
rounds; the digits models are timed with a second int8 file built for 224 (``--size 224``).
The speedups are against the float model pinned to 224x224 (what ``effnet quantize`` times;
the dynamic-size export, also timed, is slower). The per-op table comes from onnxruntime's
profiler (batch 16). ``--gemm-weights`` quantizes each model once per weight kind (rows
``lite0[s7]`` ...), the default kind without a suffix.

    python benchmarks/quantize_bench.py --out runs/quantize_bench
    python benchmarks/quantize_bench.py --models lite0 --gemm-weights s8-safe s7 u8 s8
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from onnx_b0_weights import DIGITS_TRAIN, digits, digits_arrays  # noqa: E402
from onnx_photos import LABELS, augmented, real_photos, write_folder  # noqa: E402

from effnet.deploy.export.onnx import export  # noqa: E402
from effnet.deploy.quantize.calibration import load_evaluation  # noqa: E402
from effnet.deploy.quantize.graph import fix_input_size, prepare_graph  # noqa: E402
from effnet.deploy.quantize.pipeline import quantize  # noqa: E402
from effnet.deploy.quantize.recipe import FLOAT_OPS, QUANTIZED_OPS, WEIGHT_KINDS  # noqa: E402
from effnet.deploy.quantize.report import build_report, measure_speed  # noqa: E402
from effnet.runtime.onnx_metadata import read_metadata  # noqa: E402
from effnet.tasks.bench.machine import cpu_features, cpu_model  # noqa: E402

SIZE = 224




def photo_sets(out: Path) -> dict[str, Path]:
    photos = real_photos()
    sets = {"calib": out / "photos_calib", "compare": out / "photos_compare", "labelled": out / "photos_labelled"}
    if not sets["calib"].exists():
        write_folder(augmented(photos, 5, seed=1), sets["calib"])
        write_folder({**photos, **augmented(photos, 3, seed=7)}, sets["compare"])
        write_folder({name: photos[name] for name in LABELS}, sets["labelled"])
        (sets["labelled"] / "labels.txt").write_text(
            "".join(f"{name}.png {','.join(map(str, classes))}\n" for name, classes in LABELS.items()))
    return sets


def digit_sets(out: Path) -> dict[str, Path]:
    """The B0 digits split (first 1437 train, last 360 test) as 64x64 PNG files."""
    calib, test = out / "digits_calib", out / "digits_test"
    if not calib.exists():
        images, labels = digits_arrays()
        picks = np.linspace(0, DIGITS_TRAIN - 1, 300).round().astype(int)
        write_folder({f"{i:04d}": images[i] for i in picks}, calib)
        write_folder({f"{i:04d}": images[i] for i in range(DIGITS_TRAIN, len(images))}, test)
        lines = [f"{i:04d}.png {labels[i]}\n" for i in range(DIGITS_TRAIN, len(images))]
        (test / "labels.txt").write_text("".join(lines))
    return {"calib": calib, "compare": test, "labels": test / "labels.txt"}


def lite0_digit_sets(out: Path) -> dict[str, Path]:
    """The validation split ``effnet train`` holds out for digits (val_fraction 0.2, seed 0)."""
    from effnet.data.digits import load_digits_split

    calib, test = out / "lite0_digits_calib", out / "lite0_digits_val"
    if not calib.exists():
        train, val = load_digits_split(0.2, 0)
        rgb = lambda image: np.stack([image] * 3, -1)  # noqa: E731
        picks = np.linspace(0, len(train) - 1, 300).round().astype(int)
        write_folder({f"{i:04d}": rgb(train.images[i]) for i in picks}, calib)
        write_folder({f"{i:04d}": rgb(image) for i, image in enumerate(val.images)}, test)
        (test / "labels.txt").write_text("".join(f"{i:04d}.png {label}\n" for i, label in enumerate(val.labels)))
    return {"calib": calib, "compare": test, "labels": test / "labels.txt"}


def op_time_share(path: Path, threads: int, batch: int = 16, runs: int = 4) -> dict[str, float]:
    """Share of kernel time per op type in the graph onnxruntime runs (its profiler)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    for _ in range(runs):
        session.run(None, {session.get_inputs()[0].name: x})
    profile = Path(session.end_profiling())
    totals: collections.Counter = collections.Counter()
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    profile.unlink()
    total = sum(totals.values())
    return {op: value / total for op, value in totals.most_common()}


def run_model(name: str, float_path: Path, calib: Path, compare: Path, labels: Path | None, out: Path,
              threads: int, rounds: int, **options) -> dict:
    """Quantize at the model's own size for agreement/accuracy; time at 224 (a second int8
    file pinned to 224 when the model's own size differs, calibrated on the same images)."""
    int8_path = out / f"{name}.int8.onnx"
    started = time.perf_counter()
    report = quantize(float_path, calib, int8_path, eval_dir=compare, eval_labels=labels, speed=False,
                      **options).report
    report["quantize_seconds"] = time.perf_counter() - started
    timed = int8_path
    if read_metadata(str(float_path))["preprocessing"]["size"] != SIZE:
        timed = out / f"{name}.int8.{SIZE}.onnx"
        report["timed_file"] = quantize(float_path, calib, timed, size=SIZE, speed=False, **options).report
    fixed = out / f"{float_path.stem}.fixed{SIZE}.onnx"
    if not fixed.exists():
        onnx.save(fix_input_size(prepare_graph(onnx.load(str(float_path))), SIZE), str(fixed))
    image = np.random.default_rng(0).standard_normal((3, SIZE, SIZE)).astype(np.float32)
    dynamic, fp32, int8 = measure_speed([float_path, fixed, timed], image, threads, rounds=rounds)
    report["speed"] = {"threads": threads, "size": SIZE, "fp32": fp32, "int8": int8, "fp32_dynamic_size": dynamic,
                       "speedup_bs1": fp32["latency_bs1_ms"] / int8["latency_bs1_ms"],
                       "speedup_bs16": int8["throughput_bs16_img_s"] / fp32["throughput_bs16_img_s"]}
    report["op_share"] = {"fp32": op_time_share(fixed, threads), "int8": op_time_share(timed, threads)}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/quantize_bench"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--lite0-digits", type=Path, default=None,
                        help="weights from `effnet train --config digits_finetune_lite0.yaml` (model_best.safetensors)")
    parser.add_argument("--models", nargs="+", default=["lite0", "b0_digits", "lite0_digits"])
    parser.add_argument("--gemm-weights", nargs="+", default=["auto"], choices=("auto",) + WEIGHT_KINDS,
                        help="GEMM weight kinds to compare (each model is quantized once per kind)")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    import onnxruntime

    print(f"machine: {cpu_model()} ({cpu_features()}), {threads_note(args.threads)}, onnxruntime {onnxruntime.__version__}, "
          f"python {platform.python_version()}", flush=True)
    reports = {}
    photos = photo_sets(out)
    kinds = {"" if kind == "auto" else f"[{kind}]": {"gemm_weights": kind} for kind in args.gemm_weights}
    if "lite0" in args.models:
        path = out / "lite0.onnx"
        if not path.exists():
            export("efficientnet_lite0", "default", path)
        for suffix, kind in kinds.items():
            name = f"lite0{suffix}"
            reports[name] = run_model(name, path, photos["calib"], photos["compare"], None, out, args.threads,
                                      args.rounds, **kind)
            metadata = read_metadata(str(path))
            evaluation = load_evaluation(photos["labelled"], photos["labelled"] / "labels.txt", metadata)
            labelled = build_report(path, out / f"{name}.int8.onnx", metadata, evaluation, None, args.threads,
                                    False, False, print)
            reports[name]["labelled_photos"] = {"images": labelled["images"], **labelled["accuracy"],
                                                "top1_agreement": labelled["top1_agreement"]}
    if "b0_digits" in args.models:
        weights = out / "b0_digits.safetensors"
        if not weights.exists():
            digits(weights)
        path = out / "b0_digits.onnx"
        if not path.exists():
            export(None, str(weights), path)
        sets = digit_sets(out)
        reports["b0_digits"] = run_model("b0_digits", path, sets["calib"], sets["compare"], sets["labels"], out,
                                         args.threads, args.rounds)
        # The claim behind leaving SiLU and squeeze-excitation float, measured: quantize them too.
        reports["b0_digits_silu_int8"] = run_model("b0_digits_silu_int8", path, sets["calib"], sets["compare"],
                                                   sets["labels"], out, args.threads, args.rounds,
                                                   op_types=QUANTIZED_OPS + FLOAT_OPS)
    if "lite0_digits" in args.models and args.lite0_digits is not None:
        path = out / "lite0_digits.onnx"
        if not path.exists():
            export(None, str(args.lite0_digits), path)
        sets = lite0_digit_sets(out)
        reports["lite0_digits"] = run_model("lite0_digits", path, sets["calib"], sets["compare"], sets["labels"], out,
                                            args.threads, args.rounds)
    (out / "results.json").write_text(json.dumps(reports, indent=2))
    print_tables(reports, args.threads)
    return 0


def threads_note(threads: int) -> str:
    import os

    return f"{os.cpu_count()} cores, {threads} onnxruntime threads"


def print_tables(reports: dict, threads: int) -> None:
    print(f"\nfp32: the float model pinned to {SIZE}x{SIZE} (the dynamic-size export is slower; results.json)")
    print(f"\n| model | fp32 bs1 ms | int8 bs1 ms | speedup bs1 | fp32 bs16 img/s | int8 bs16 img/s | speedup bs16 "
          f"| top-1 agreement | accuracy fp32 | accuracy int8 | drop | float layers |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, report in reports.items():
        speed = report["speed"]
        accuracy = report.get("accuracy") or report.get("labelled_photos")
        acc = (f"{100 * accuracy['fp32']:.2f}% | {100 * accuracy['int8']:.2f}% | "
               f"{100 * (accuracy['fp32'] - accuracy['int8']):.2f} pt") if accuracy else "- | - | -"
        print(f"| {name} | {speed['fp32']['latency_bs1_ms']:.2f} | {speed['int8']['latency_bs1_ms']:.2f} | "
              f"{speed['speedup_bs1']:.2f}x | {speed['fp32']['throughput_bs16_img_s']:.1f} | "
              f"{speed['int8']['throughput_bs16_img_s']:.1f} | {speed['speedup_bs16']:.2f}x | "
              f"{100 * report['top1_agreement']:.1f}% ({report['images']}) | {acc} | "
              f"{', '.join(report['float_layers']) or 'none'} |")
    for name, report in reports.items():
        print(f"\n{name}: share of kernel time per op (batch 16, {threads} threads)\n")
        print("| fp32 op | share | int8 op | share |\n|---|---:|---|---:|")
        fp32, int8 = list(report["op_share"]["fp32"].items()), list(report["op_share"]["int8"].items())
        for row in range(min(8, max(len(fp32), len(int8)))):
            left = f"{fp32[row][0]} | {100 * fp32[row][1]:.1f}%" if row < len(fp32) else " | "
            right = f"{int8[row][0]} | {100 * int8[row][1]:.1f}%" if row < len(int8) else " | "
            print(f"| {left} | {right} |")


if __name__ == "__main__":
    sys.exit(main())
