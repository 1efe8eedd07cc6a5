"""training_curves.png: accuracy and loss per epoch, with the start of fine-tuning marked."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tfpipe.finetune import FINE_TUNE  # noqa: E402


def plot_history(history: list[dict], path: str) -> None:
    epochs = [record["epoch"] for record in history]
    figure, axes = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    for axis, metric, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Cross-entropy loss")):
        for key, label in ((metric, "Training"), (f"val_{metric}", "Validation")):
            points = [(e, r[key]) for e, r in zip(epochs, history) if r.get(key) is not None]
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=f"{label} {metric}")
        first_fine_tune = next((r["epoch"] for r in history if r["phase"] == FINE_TUNE), None)
        if first_fine_tune is not None:
            # Fine-tuning starts after the last feature-extraction epoch.
            axis.axvline(first_fine_tune - 0.5, color="gray", linestyle="--", label="Start fine-tuning")
        axis.set_title(title)
        axis.legend(loc="best")
        axis.grid(alpha=0.3)
    axes[1].set_xlabel("Epoch")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
