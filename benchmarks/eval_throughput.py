"""Is data loading the bottleneck of `effnet eval`? Eval throughput vs model-only forward, same run.

Builds 256 real-size JPEGs (about 500x375, like ImageNet val) from the photos shipped in
scikit-image / scikit-learn / matplotlib with random crops and flips, then measures for Lite0:

- model only: the engine on a ready-made batch (the ceiling: no decoding at all);
- eval: the whole `effnet eval` loop (decode, preprocess, forward, top-k) with 0..N DataLoader
  workers, including worker start-up.

Runs alternate (model, eval, model, eval, ..., model); each eval is divided by the mean of the
model-only runs on either side of it and the table shows the median of those ratios, so a
noisy neighbour on a shared machine hurts both sides alike.

    python benchmarks/eval_throughput.py [--workers 0 1 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from effnet.data.datasets import LabelResolver, load_eval_set
from effnet.runtime import open_engine
from effnet.runtime.evaluation import predict_shard

#: (package, file, ImageNet class it is filed under)
SOURCES = [
    ("skimage", "data/chelsea.png", 281), ("skimage", "data/coffee.png", 967), ("skimage", "data/rocket.jpg", 657),
    ("skimage", "data/astronaut.png", 812), ("skimage", "data/motorcycle_left.png", 665),
    ("sklearn", "datasets/images/china.jpg", 698), ("sklearn", "datasets/images/flower.jpg", 985),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", 652),
]


def make_jpegs(folder: Path, count: int = 256, seed: int = 0) -> None:
    """``count`` JPEGs of about 500x375 (a quarter portrait) in class folders, quality 90."""
    rng = np.random.default_rng(seed)
    photos = []
    for package, relative, label in SOURCES:
        with resources.as_file(resources.files(package).joinpath(relative)) as path:
            photos.append((Image.open(path).convert("RGB"), label))
    for i in range(count):
        photo, label = photos[i % len(photos)]
        area = rng.uniform(0.5, 1.0) * photo.width * photo.height
        width = int(min(photo.width, np.sqrt(area * 4 / 3)))
        height = int(min(photo.height, width * 3 / 4))
        left, top = rng.integers(0, photo.width - width + 1), rng.integers(0, photo.height - height + 1)
        crop = photo.crop((left, top, left + width, top + height))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        size = (375, 500) if rng.random() < 0.25 else (500, 375)
        (folder / str(label)).mkdir(exist_ok=True)
        crop.resize(size, Image.Resampling.BICUBIC).save(folder / str(label) / f"{i:04d}.jpg", quality=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()

    engine = open_engine("torch", args.model, "default")
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        make_jpegs(folder)
        eval_set = load_eval_set(folder, LabelResolver())
        count = len(eval_set)
        size = engine.preprocessing.size
        batch = np.random.default_rng(0).standard_normal((args.batch_size, 3, size, size), dtype=np.float32)
        for _ in range(3):
            engine(batch)  # warm-up: first calls pick kernels

        def model_only() -> float:
            batches = count // args.batch_size
            start = time.perf_counter()
            for _ in range(batches):
                engine(batch)
            return batches * args.batch_size / (time.perf_counter() - start)

        def full_eval(workers: int) -> tuple[float, float]:
            start = time.perf_counter()
            output = predict_shard(engine, eval_set, range(count), batch_size=args.batch_size, workers=workers)
            assert len(output.positions) == count and not output.failed
            return count / (time.perf_counter() - start), output.wait_seconds / output.seconds

        # model, eval, model, eval, ..., model: each eval is compared with the model-only runs
        # just before and after it, so slow drifts in the machine's load cancel out.
        model_rates = [model_only()]
        eval_rates: dict[int, list[float]] = {w: [] for w in args.workers}
        ratios: dict[int, list[float]] = {w: [] for w in args.workers}
        waits: dict[int, list[float]] = {w: [] for w in args.workers}
        for _ in range(args.repeats):
            for workers in args.workers:
                rate, wait = full_eval(workers)
                model_rates.append(model_only())
                eval_rates[workers].append(rate)
                waits[workers].append(wait)
                ratios[workers].append(rate / statistics.mean(model_rates[-2:]))

    model_rate = statistics.median(model_rates)
    import torch

    print(f"{args.model}, batch {args.batch_size}, {count} JPEGs ~500x375, torch {torch.__version__}, "
          f"{torch.get_num_threads()} intra-op threads, {os.cpu_count()} CPUs; median of {args.repeats} runs\n")
    print(f"{'pipeline':<28} {'images/s':>9} {'vs model only':>14} {'range':>12} {'waiting for data':>17}")
    print(f"{'model only (no data)':<28} {model_rate:9.1f} {'1.00':>14}")
    for workers, rates in eval_rates.items():
        print(f"{f'effnet eval, {workers} workers':<28} {statistics.median(rates):9.1f} "
              f"{statistics.median(ratios[workers]):14.2f} {min(ratios[workers]):5.2f}-{max(ratios[workers]):.2f} "
              f"{statistics.median(waits[workers]):16.1%}")
    print("\nvs model only: median over repeats of eval images/s divided by the mean of the model-only "
          "runs just before and after it.\nwaiting for data: share of the eval run the model loop spent "
          "blocked on the DataLoader (with 0 workers: decoding in line).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
