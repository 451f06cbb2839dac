"""Real-data check: hand-labelled photos that ship inside installed packages, run through `effnet eval`.

The photos come from scikit-image, scikit-learn and matplotlib (so the check needs no download).
Their ImageNet-1k labels were chosen by looking at each photo, before running any model.
A line may list several classes: any of them counts as right (see docs/evaluate.md).
Photos with no ImageNet class at all (astronaut portrait, dahlia, galaxies, retina, coins,
textures) are left out.

    python scripts/eval_real_photos.py                 # Lite0/1/2, builds the set in a temp dir
    python scripts/eval_real_photos.py --keep photos/  # also keep the set for `effnet eval photos/ --labels ...`
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

#: (package, file inside its data folder, accepted ImageNet-1k indices, clear or ambiguous, why)
PHOTOS = [
    ("skimage", "data/chelsea.png", (281, 282, 285), "clear",
     "a tabby-type domestic cat: tabby / tiger cat / Egyptian Mau are the classes ImageNet confuses"),
    ("skimage", "data/coffee.png", (967, 968), "clear", "espresso in a cup on a saucer"),
    ("skimage", "data/rocket.jpg", (657, 744), "clear", "rocket on a launch pad; ImageNet has two 'missile' classes"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", (652,), "clear", "portrait in navy uniform"),
    ("skimage", "data/camera.png", (872, 759), "ambiguous",
     "grey cameraman: tripod and camera both visible, the camera is not really a reflex camera"),
    ("skimage", "data/clock_motion.png", (409, 892), "ambiguous", "motion-blurred clock face; kind of clock unclear"),
    ("skimage", "data/motorcycle_left.png", (665, 670), "ambiguous",
     "motorcycle: ImageNet-1k has no motorcycle class, moped / motor scooter are the nearest"),
    ("sklearn", "datasets/images/china.jpg", (698, 663, 832), "ambiguous",
     "Summer Palace Buddhist tower: palace / monastery / stupa are each partly right"),
]

MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def build(folder: Path) -> tuple[Path, Path]:
    """Copy the photos into ``folder`` and write ``labels.txt`` (all) and ``labels-clear.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = {"all": [], "clear": []}
    for package, relative, classes, kind, why in PHOTOS:
        source = resources.files(package).joinpath(relative)
        name = Path(relative).name
        with resources.as_file(source) as path:
            shutil.copyfile(path, folder / name)
        line = f"# {why} ({kind})\n{name} {','.join(map(str, classes))}"
        lines["all"].append(line)
        if kind == "clear":
            lines["clear"].append(line)
    (folder / "labels.txt").write_text("\n".join(lines["all"]) + "\n")
    (folder / "labels-clear.txt").write_text("\n".join(lines["clear"]) + "\n")
    return folder / "labels.txt", folder / "labels-clear.txt"


def evaluate(folder: Path, labels: Path, model: str) -> dict:
    command = [sys.executable, "-m", "effnet", "eval", str(folder), "--labels", str(labels), "--model", model,
               "--json", "-", "--workers", "0", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="build the set here and keep it")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.keep or Path(temporary)
        all_labels, clear_labels = build(folder)
        print(f"{'model':<20} {'set':<10} {'images':>6} {'Top_1':>7} {'Top_5':>7}   top-1 per photo")
        for model in args.models:
            for name, labels in (("clear", clear_labels), ("all", all_labels)):
                result = evaluate(folder, labels, model)
                firsts = " ".join(f"{p['file']}={p['top5'][0]}{'+' if p['top5'][0] in p['target'] else '-'}"
                                  for p in result["predictions"]) if name == "all" else ""
                print(f"{model:<20} {name:<10} {result['evaluated']:>6} {100 * result['Top_1_Accuracy']:6.1f}% "
                      f"{100 * result['Top_5_Accuracy']:6.1f}%   {firsts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
