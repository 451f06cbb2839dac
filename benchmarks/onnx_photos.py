"""Real photos shipped inside scikit-image and scikit-learn (plus the repo's examples), for
calibration, fp32-vs-int8 agreement and a small hand-labelled ImageNet set.

Everything here is a photograph or a camera capture (no synthetic images: scikit-image's
colorwheel, logo and horse silhouette are left out). Images that scikit-image would have to
download (eagle, skin, lily, ...) are skipped. ``augmented`` makes deterministic crops and
flips when more calibration images are wanted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

#: scikit-image loaders that return photographs (grey ones are expanded to RGB).
SKIMAGE_PHOTOS = (
    "astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page", "retina",
    "rocket", "text", "cell",
)

#: Hand-labelled: photo -> ImageNet-1k class indices that are a correct answer for it
#: (WordNet names in comments). Chosen by looking at the photos, not at any model's output.
LABELS: dict[str, tuple[int, ...]] = {
    "chelsea": (281, 282, 285),  # tabby, tiger cat, Egyptian cat
    "coffee": (967, 968, 504),  # espresso, cup, coffee mug
    "rocket": (657, 744, 812),  # missile, projectile, space shuttle
    "clock": (409, 892),  # analog clock, wall clock
    "motorcycle_left": (665, 670),  # moped, motor scooter
    "motorcycle_right": (665, 670),
    "flower": (985,),  # daisy
    "china": (698, 663, 832),  # palace, monastery, stupa
    "example_cat": (281, 282, 285),
    "example_espresso": (967, 968, 504),
}


def _rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3].astype(np.uint8))


def real_photos() -> dict[str, np.ndarray]:
    """Name -> HxWx3 uint8 RGB, in a fixed order."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    photos: dict[str, np.ndarray] = {}
    for name in SKIMAGE_PHOTOS:
        try:
            photos[name] = _rgb(getattr(skimage.data, name)())
        except (ModuleNotFoundError, OSError, ValueError):  # needs a download: not shipped
            continue
    left, right, _ = skimage.data.stereo_motorcycle()
    photos["motorcycle_left"], photos["motorcycle_right"] = _rgb(left), _rgb(right)
    for name in ("china", "flower"):
        photos[name] = _rgb(load_sample_image(f"{name}.jpg"))
    for path in sorted((REPO / "examples" / "images").glob("*.jpg")):
        photos[f"example_{path.stem}"] = _rgb(np.asarray(Image.open(path).convert("RGB")))
    return photos


def augmented(photos: dict[str, np.ndarray], copies: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``copies`` random crops (50-100% of each side) per photo, half of them mirrored."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, image in photos.items():
        height, width = image.shape[:2]
        for k in range(copies):
            h = int(height * rng.uniform(0.5, 1.0))
            w = int(width * rng.uniform(0.5, 1.0))
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            crop = image[top : top + h, left : left + w]
            out[f"{name}_aug{k}"] = np.ascontiguousarray(crop[:, ::-1] if k % 2 else crop)
    return out


def write_folder(images: dict[str, np.ndarray], folder: Path) -> list[Path]:
    """PNG files (lossless, so every reader sees the same pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in images.items():
        path = folder / f"{name}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def main() -> None:
    """Write the photos (and random crops of them) as PNGs: a calibration folder for
    ``effnet quantize --calib`` and ``effnet bench --backends onnx-int8 --calib``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path, help="where to write the PNG files")
    parser.add_argument("--copies", type=int, default=5, help="random crops/flips per photo (default 5)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the crops' seed (default 0); another seed gives crops to hold out from calibration")
    parser.add_argument("--crops-only", action="store_true", help="only the crops, not the whole photos")
    args = parser.parse_args()
    photos = real_photos()
    crops = augmented(photos, args.copies, seed=args.seed)
    paths = write_folder(crops if args.crops_only else photos | crops, args.folder)
    print(f"wrote {len(paths)} images ({len(photos)} photos, {args.copies} crops each) to {args.folder}")


if __name__ == "__main__":
    main()
