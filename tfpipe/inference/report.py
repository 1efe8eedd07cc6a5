"""The pictures a run writes: training_curves.png (accuracy and loss per epoch, with the start
of fine-tuning marked) and the evaluation's confusion_matrix.png and mistakes.png."""

from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_history(history: list[dict], path: str, *, marked_phase: str | None = None) -> None:
    """training_curves.png: accuracy and loss per epoch of `history` (history.json's records),
    with a line before the first epoch of `marked_phase` (the start of fine-tuning)."""
    epochs = [record["epoch"] for record in history]
    figure, axes = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    for axis, metric, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Cross-entropy loss")):
        for key, label in ((metric, "Training"), (f"val_{metric}", "Validation")):
            points = [(e, r[key]) for e, r in zip(epochs, history) if r.get(key) is not None]
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=f"{label} {metric}")
        first_fine_tune = next((r["epoch"] for r in history if r["phase"] == marked_phase), None)
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


def plot_confusion_matrix(result: dict, path: str) -> None:
    """evaluation/confusion_matrix.png: counts, true class by row, predicted by column."""
    matrix = np.asarray(result["confusion_matrix"])
    names = result["class_names"]
    size = max(4.0, 0.6 * len(names) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    shown = axes.imshow(matrix, cmap="Blues", vmin=0)
    figure.colorbar(shown, ax=axes)
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{result['split']}: accuracy {result['accuracy']:.3f}")
    if len(names) <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, column), count in np.ndenumerate(matrix):
            color = "white" if count > threshold else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=color)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def plot_mistakes(mistakes: list, names, path: str) -> None:
    """evaluation/mistakes.png: (image, true id, predicted id, probability) in a grid."""
    columns = 4
    rows = max(1, -(-len(mistakes) // columns))
    figure, grid = plt.subplots(rows, columns, figsize=(3 * columns, 3.3 * rows), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, (image, true, predicted, probability) in zip(grid.flat, mistakes):
        axes.imshow(image)
        axes.set_title(f"true {names[true]}\npredicted {names[predicted]} ({probability:.2f})", fontsize=9)
    if not mistakes:
        grid.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=80)
    plt.close(figure)
