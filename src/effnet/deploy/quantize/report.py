"""What a run reports: fp32 vs int8 top-1 agreement, accuracy when labelled, size, speed,
the ops onnxruntime really runs, and the per-layer sensitivity; as JSON and as markdown.

Speed is timed through ``runtime.timing.time_calls`` (the one timing loop) in interleaved
rounds, one session alive at a time: an idle session's threads keep spinning after its last
run and took half the CPU from the next model (Lite0 int8 at batch 1 measured 7.6 ms right
after an fp32 run, 3.9 ms alone).
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ...data.datasets import EvalSet
from ...data.transforms import Preprocessing
from ...runtime.timing import Timing, time_calls
from .calibration import evaluation_inputs
from .graph import Layer
from .recipe import BATCH_SIZE, Settings
from .sensitivity import FloatChoice, relative_error
from .sessions import run_batches, session

#: Timed calls per model and round: batch 1, and batch ``BATCH_SIZE``.
SINGLE_CALLS, BATCH_CALLS = 10, 2


def measure_speed(paths: Sequence[Path], image: np.ndarray, threads: int | None, rounds: int = 3,
                  batch_size: int = BATCH_SIZE) -> list[dict[str, float]]:
    """Batch-1 latency (median ms) and batch-``batch_size`` throughput (images/s) per model.

    The models are timed in interleaved rounds so that load from other processes hits all of
    them alike, each round opening one session at a time; every session's first call of each
    batch size is its warm-up. ``image``: one preprocessed input, repeated for the batch.
    """
    single = np.ascontiguousarray(image[None])
    batch = np.repeat(single, batch_size, axis=0)
    latencies = [Timing() for _ in paths]
    batch_times = [Timing() for _ in paths]
    for _ in range(rounds):
        for index, path in enumerate(paths):
            latency, batch_time = _time_one_round(path, threads, single, batch)
            latencies[index].extend(latency)
            batch_times[index].extend(batch_time)
            gc.collect()  # the session is gone before the next one starts
    return [{"latency_bs1_ms": 1000 * latency.p50, f"throughput_bs{batch_size}_img_s": batch_size / timing.p50}
            for latency, timing in zip(latencies, batch_times)]


def _time_one_round(path: Path, threads: int | None, single: np.ndarray, batch: np.ndarray) -> tuple[Timing, Timing]:
    """One session's round: ``SINGLE_CALLS`` timed calls at batch 1, ``BATCH_CALLS`` at the batch."""
    running = session(path, threads)
    name = running.get_inputs()[0].name
    latency = time_calls(lambda: running.run(None, {name: single}), warmup=0, budget=0, min_repeats=SINGLE_CALLS)
    batch_time = time_calls(lambda: running.run(None, {name: batch}), warmup=0, budget=0, min_repeats=BATCH_CALLS)
    return latency, batch_time


def int8_op_counts(path: Path) -> dict[str, int]:
    """Op types in the graph onnxruntime actually runs (after its QDQ fusions), counted."""
    with tempfile.TemporaryDirectory(prefix="effnet-optimized-") as temporary:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.optimized_model_filepath = str(Path(temporary) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def build_report(model: Path, quantized: Path, metadata: dict[str, Any], evaluation: EvalSet | None,
                 calibration_inputs: np.ndarray, threads: int | None, speed: bool, progress: bool,
                 say: Callable[[str], None], fp32_timed: Path | None = None) -> dict[str, Any]:
    """fp32 vs int8: top-1 agreement, accuracy when labelled, size, latency and throughput.

    ``evaluation``: the images to compare on (``calibration.load_evaluation``); None compares
    on the calibration images. ``fp32_timed``: the float graph to time, when not ``model``
    itself: the float model pinned to the int8 file's input size, so the speedup compares like
    with like (a dynamic-size export is itself 1.3-1.5x slower than a fixed-size one,
    benchmarks/onnx_fixed_size.py).
    """
    targets = None
    if evaluation is not None:
        preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
        inputs, targets, skipped = evaluation_inputs(evaluation, preprocessing, progress)
        source = str(evaluation.root)
    else:
        inputs, source, skipped = calibration_inputs, "calibration images", 0
    say(f"comparing fp32 and int8 on {len(inputs)} images ...")
    fp32 = run_batches(session(model, threads), inputs)
    int8 = run_batches(session(quantized, threads), inputs)
    report: dict[str, Any] = {
        "compared_on": source, "images": len(inputs), "skipped": skipped,
        "top1_agreement": float(np.mean(fp32.argmax(1) == int8.argmax(1))),
        "relative_logits_error": relative_error(int8, fp32),
        "size_mb": {"fp32": model.stat().st_size / 1e6, "int8": quantized.stat().st_size / 1e6},
    }
    if targets is not None:
        report["accuracy"] = {
            name: float(np.mean([pred in target for pred, target in zip(logits.argmax(1), targets)]))
            for name, logits in (("fp32", fp32), ("int8", int8))
        }
    if speed:
        say("timing fp32 and int8 ...")
        report["speed"] = speed_report(fp32_timed or model, quantized, inputs[0], threads, fp32_timed is not None)
    return report


def speed_report(fp32: Path, int8: Path, image: np.ndarray, threads: int | None, fixed_size: bool) -> dict[str, Any]:
    """Latency and throughput of both files, and int8's speedup on each."""
    fp32_speed, int8_speed = measure_speed([fp32, int8], image, threads)
    return {"threads": threads or "onnxruntime default", "fp32": fp32_speed, "int8": int8_speed,
            "fp32_graph": "the float model at the int8 file's fixed input size" if fixed_size
            else "the float model as given",
            "speedup": {key: (int8_speed[key] / fp32_speed[key] if "throughput" in key
                              else fp32_speed[key] / int8_speed[key]) for key in fp32_speed}}


def run_fields(model: Path, output: Path, arch: str, calib: Any, settings: Settings, vnni: bool, used: int,
               failures: list[str], keep_float: int | str, choice: FloatChoice, layers: Sequence[Layer]
               ) -> dict[str, Any]:
    """How the run went: its inputs, settings, calibration, keep-float trials and the
    per-layer sensitivity, most sensitive first."""
    ranked = sorted(layers, key=lambda layer: -layer.error)
    return {
        "model": str(model), "output": str(output), "arch": arch, "settings": {
            **asdict(settings), "op_types": list(settings.op_types), "cpu_vnni": vnni},
        "calibration": {"folder": str(calib), "images": used, "skipped": len(failures), "skipped_files": failures},
        "keep_float": {"requested": keep_float, "chosen": choice.count,
                       "curve": [{"float_layers": c, "relative_error": e} for c, e in choice.curve],
                       "trials": [asdict(trial) for trial in choice.trials]},
        "float_layers": [layer.name for layer in choice.float_layers],
        "sensitivity": [{"layer": layer.name, "kind": layer.kind, "relative_error": layer.error, "macs": layer.macs,
                         "weights": layer.weights, "kept_float": layer.kept_float} for layer in ranked],
    }


def markdown(report: dict[str, Any], sensitive_rows: int = 8) -> str:
    """The report as markdown tables (what ``effnet quantize`` prints)."""
    lines = [f"## {report['arch']}: fp32 vs int8 ({report['output']})", "",
             "| | fp32 | int8 | int8 vs fp32 |", "|---|---:|---:|---:|"]
    lines.append(f"| top-1 agreement ({report['images']} images: {report['compared_on']}) | | | "
                 f"{100 * report['top1_agreement']:.1f}% |")
    if "accuracy" in report:
        fp32, int8 = report["accuracy"]["fp32"], report["accuracy"]["int8"]
        lines.append(f"| top-1 accuracy | {100 * fp32:.2f}% | {100 * int8:.2f}% | {100 * (int8 - fp32):+.2f} pt |")
    size = report["size_mb"]
    lines.append(f"| model size | {size['fp32']:.1f} MB | {size['int8']:.1f} MB | "
                 f"{size['fp32'] / size['int8']:.2f}x smaller |")
    if "speed" in report:
        speed = report["speed"]
        for key, label, unit in (("latency_bs1_ms", "latency batch 1", "ms"),
                                 ("throughput_bs16_img_s", "throughput batch 16", "img/s")):
            lines.append(f"| {label} ({speed['threads']} threads) | {speed['fp32'][key]:.1f} {unit} | "
                         f"{speed['int8'][key]:.1f} {unit} | {speed['speedup'][key]:.2f}x speed |")
        if "fp32_graph" in speed:
            lines += ["", f"Speed: fp32 is {speed['fp32_graph']}."]
    lines += ["", f"Sensitivity (logits error with only that layer int8, relative to the logits' variance); "
              f"{report['keep_float']['chosen']} kept float:", "",
              "| layer | kind | relative error | runs |", "|---|---|---:|---|"]
    for row in report["sensitivity"][:sensitive_rows]:
        lines.append(f"| {row['layer']} | {row['kind']} | {row['relative_error']:.4f} | "
                     f"{'float' if row['kept_float'] else 'int8'} |")
    lines += ["", "Keep-float trials (relative logits error of the whole int8 model):", "",
              "| float layers | relative error | outcome |", "|---|---:|---|"]
    for trial in report["keep_float"]["trials"]:
        error = "" if trial["relative_error"] is None else f"{trial['relative_error']:.4f}"
        lines.append(f"| {', '.join(trial['float_layers']) or 'none'} | {error} | {trial['outcome']} |")
    return "\n".join(lines)
