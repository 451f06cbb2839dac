"""Lite0 on LiteRT, measured in one run: effnet's fp32 and int8 ``.tflite`` files vs
onnxruntime fp32, batch 1, at ``--threads`` (2), interleaved rounds through
``runtime.timing.time_calls``; int8 top-1 agreement with fp32 and accuracy on the real photos
of ``benchmarks/onnx_photos.py`` (the int8 file is calibrated on crops of the same photos with
another seed, so no agreement image is a calibration image).

    PYTHONPATH=src python benchmarks/tflite_bench.py --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_photos import LABELS, augmented, real_photos, write_folder  # noqa: E402

from effnet.deploy.export.onnx import export  # noqa: E402
from effnet.deploy.export.tflite import export_tflite  # noqa: E402
from effnet.runtime import open_engine  # noqa: E402
from effnet.runtime.timing import Timing, time_calls  # noqa: E402

MODEL = "efficientnet_lite0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calib-images", type=int, default=144, help="int8 calibration crops (144: all of them)")
    args = parser.parse_args()
    photos = real_photos()
    compare = photos | augmented(photos, 5, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_folder(photos | augmented(photos, 5, seed=1), root / "calib")
        files = {
            "onnxruntime fp32": export(MODEL, "default", root / "lite0.onnx", batch=1, size="native").path,
            "litert fp32": export_tflite(MODEL, "default", root / "lite0.tflite").path,
        }
        int8 = export_tflite(MODEL, "default", root / "lite0_int8.tflite", int8=True, calibration=root / "calib",
                             num_images=args.calib_images)
        files["litert int8 (uint8 input, stem + first conv float)"] = int8.path
        files["litert int8 full-integer (uint8 input)"] = export_tflite(
            MODEL, "default", root / "lite0_int8_full.tflite", int8=True, calibration=root / "calib",
            num_images=args.calib_images, float_layers=0).path
        engines = {name: open_engine("auto", None, str(path), threads=args.threads) for name, path in files.items()}
        logits = {name: np.stack([engine(engine.preprocessing(image)[None])[0] for image in compare.values()])
                  for name, engine in engines.items()}
        timings = {name: Timing() for name in engines}
        for _ in range(args.rounds):
            for name, engine in engines.items():
                batch = engine.example_input(1)
                timings[name].extend(time_calls(lambda: engine(batch), budget=1.0))
    names = list(compare)
    labelled = [i for i, name in enumerate(names) if name in LABELS]
    fp32_top1 = logits["litert fp32"].argmax(1)
    print(f"{MODEL}, batch 1, {args.threads} threads, {len(names)} photos ({len(labelled)} hand-labelled); "
          f"int8 calibrated on {int8.calibration_images} other crops")
    print("| engine | p50 ms | top-1 agreement with torch-equal fp32 | labelled photos correct |")
    print("|---|---|---|---|")
    for name in engines:
        top1 = logits[name].argmax(1)
        correct = sum(int(top1[i] in LABELS[names[i]]) for i in labelled)
        print(f"| {name} | {1000 * timings[name].p50:.2f} | {100 * (top1 == fp32_top1).mean():.1f}% "
              f"| {correct}/{len(labelled)} |")


if __name__ == "__main__":
    main()
