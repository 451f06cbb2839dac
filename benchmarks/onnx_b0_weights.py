"""EfficientNet-B0 weights for the int8 benchmark, since no real B0 ImageNet weights ship here.

``digits``: B0 trained from scratch on scikit-learn's digits (8x8 grey digits shown at 64x64),
a real labelled task: 1437 training and 360 held-out test images (sklearn's fixed split by
index). Written as safetensors with effnet metadata, so ``effnet export --weights FILE``
knows its architecture, preprocessing and labels. (A random-init B0 with BatchNorm
statistics measured on photos was tried for photo agreement and dropped: onnxruntime and
torch float32 logits already differed by 0.05 at a logit spread of 3, so an int8-vs-fp32
comparison on it would measure float rounding amplified by random weights.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from effnet.data.transforms import Preprocessing
from effnet.weights.io import write_safetensors
from effnet.weights.loading import create_model

DIGITS_SIZE = 64
DIGITS_TRAIN = 1437  # sklearn digits: first 1437 images train, the last 360 test


def _metadata(name: str, preprocessing: Preprocessing, num_classes: int, labels) -> dict:  # noqa: ANN001
    return {"arch": "efficientnet_b0", "name": name, "padding": "symmetric", "bn_eps": 1e-5,
            "preprocessing": preprocessing.to_dict(), "num_classes": num_classes, "labels": labels}


def digits_arrays(size: int = DIGITS_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as size x size x 3 uint8 images (white digit on black) and labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [np.asarray(Image.fromarray((d * 16).clip(0, 255).astype(np.uint8)).resize((size, size),
                                                                                      Image.Resampling.BICUBIC))
              for d in digits.images]
    return np.stack([np.stack([g] * 3, -1) for g in images]), digits.target.astype(np.int64)


def digits(path: Path, epochs: int = 12, batch_size: int = 32) -> Path:
    torch.manual_seed(0)
    preprocessing = Preprocessing(size=DIGITS_SIZE, crop_fraction=1.0, crop_mode="resize")
    images, labels = digits_arrays()
    x = torch.from_numpy(np.stack([preprocessing(image) for image in images]))
    y = torch.from_numpy(labels)
    train_x, train_y, test_x, test_y = x[:DIGITS_TRAIN], y[:DIGITS_TRAIN], x[DIGITS_TRAIN:], y[DIGITS_TRAIN:]
    model = create_model("efficientnet_b0", num_classes=10, drop_path_rate=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    steps = epochs * ((len(train_x) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.15)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_x))
        for start in range(0, len(order), batch_size):
            pick = order[start : start + batch_size]
            batch = train_x[pick]
            shift = torch.randint(-4, 5, (2,))  # small translations: digits are not always centred
            batch = torch.roll(batch, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(batch), train_y[pick], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
        print(f"digits epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, test top-1 {100 * accuracy:.1f}%", flush=True)
    write_safetensors(model.state_dict(), path, _metadata("efficientnet_b0.digits", preprocessing, 10,
                                                             [str(i) for i in range(10)]))
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/onnx_bench")
    out.mkdir(parents=True, exist_ok=True)
    print(digits(out / "b0_digits.safetensors"))
