"""Training records: JSON lines (every record), CSV (one row per epoch) and a PNG of the curves.

A resumed run first drops records written after its checkpoint, so the files read as
if the run had never stopped. ``metrics.jsonl`` is only ever appended to (a torn last line is
dropped on resume); the files rewritten whole (CSV, PNG) are staged, never half-written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..._files import name_out_of_space, staged

EPOCH_COLUMNS = (
    "epoch", "step", "train_loss", "lr", "img_per_s", "val_loss", "val_top1", "val_top5",
    "ema_val_loss", "ema_val_top1", "ema_val_top5", "skipped_images", "epoch_seconds", "elapsed_seconds",
)


class MetricsLog:
    """Appends records to ``metrics.jsonl``; rewrites ``metrics.csv`` from the epoch records."""

    def __init__(self, folder: Path, enabled: bool = True) -> None:
        self.jsonl = folder / "metrics.jsonl"
        self.csv = folder / "metrics.csv"
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []

    def restore(self, up_to_step: int) -> None:
        """Keep the records of steps up to ``up_to_step`` (a resume point); drop torn lines."""
        if not self.jsonl.is_file():
            return
        kept: list[dict[str, Any]] = []
        for line in self.jsonl.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= up_to_step:
                kept.append(record)
        self.records = kept
        if self.enabled:
            with staged(self.jsonl) as temporary:
                temporary.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self._write_csv()

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if not self.enabled:
            return
        try:
            with open(self.jsonl, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:  # a full disk: the line may be torn, which restore() drops
            name_out_of_space(error, self.jsonl)
            raise
        if record.get("event") == "epoch":
            self._write_csv()

    def epochs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == "epoch"]

    def _write_csv(self) -> None:
        with staged(self.csv) as temporary, open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=EPOCH_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for record in self.epochs():
                writer.writerow({k: record.get(k, "") for k in EPOCH_COLUMNS})


def plot_curves(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss (train per logged step and per epoch, validation) and top-1 accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = [r for r in records if r.get("event") == "step"]
    epochs = [r for r in records if r.get("event") == "epoch"]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    if steps and epochs:
        per_epoch = max(epochs[0]["step"] / max(epochs[0]["epoch"], 1), 1)
        loss_ax.plot([r["step"] / per_epoch for r in steps], [r["loss"] for r in steps],
                     color="tab:blue", alpha=0.3, linewidth=0.8, label="train (logged steps)")
    if epochs:
        x = [r["epoch"] for r in epochs]
        loss_ax.plot(x, [r["train_loss"] for r in epochs], "o-", color="tab:blue", label="train (epoch mean)")
        for key, colour, name in (("val_loss", "tab:orange", "validation"), ("ema_val_loss", "tab:green", "validation, EMA")):
            points = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
            if points:
                loss_ax.plot(*zip(*points), "s-", color=colour, label=name)
        for key, colour, name in (("val_top1", "tab:orange", "top-1"), ("ema_val_top1", "tab:green", "top-1, EMA"),
                                  ("val_top5", "tab:purple", "top-5")):
            points = [(r["epoch"], 100.0 * r[key]) for r in epochs if r.get(key) is not None]
            if points:
                acc_ax.plot(*zip(*points), "s-", color=colour, label=name)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy, log scale (train: smoothed targets)", title="loss", yscale="log")
    best = max((r for r in epochs if r.get("val_top1") is not None), key=lambda r: r["val_top1"], default=None)
    # near 100% the curves merge into the frame: the best value in words stays readable
    accuracy_title = "validation accuracy" if best is None else (
        f"validation accuracy (best top-1 {100 * best['val_top1']:.2f}%, epoch {best['epoch']})")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title=accuracy_title)
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with staged(path, suffix=".png") as temporary:
        fig.savefig(temporary, dpi=110, format="png")
    plt.close(fig)
