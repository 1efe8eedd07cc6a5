"""The pictures a run writes: training_curves.png (accuracy and loss per epoch, with the start
of fine-tuning marked), where_time_goes.png (each epoch's computing and input waiting), the
evaluation's confusion_matrix.png and mistakes.png, and bench_input's stage rates."""

from __future__ import annotations

import numpy as np


def _figure(**kwargs):
    """A matplotlib Figure of its own, outside pyplot: no backend to choose (files only, servers have
    no display), no global state to change in the caller's process, nothing to close. matplotlib
    is imported here, at the first picture, not with the module: pyplot took 0.35-0.45 s alone,
    about 0.3 s of a tool's start (BUILD_NOTES.md, "Where a run's first seconds go")."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _integer_ticks(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def plot_history(history: list[dict], path: str, *, marked_phase: str | None = None) -> None:
    """training_curves.png: accuracy and loss per epoch of `history` (history.json's records),
    with a line before the first epoch of `marked_phase` (the start of fine-tuning)."""
    epochs = [record["epoch"] for record in history]
    figure = _figure(figsize=(8, 8))
    axes = figure.subplots(2, 1, sharex=True)
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
    _integer_ticks(axes[1].xaxis)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_confusion_matrix(result: dict, path: str) -> None:
    """evaluation/confusion_matrix.png: counts, true class by row, predicted by column."""
    matrix = np.asarray(result["confusion_matrix"])
    names = result["class_names"]
    size = max(4.0, 0.6 * len(names) + 2)
    figure = _figure(figsize=(size + 1, size))
    axes = figure.subplots()
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


def plot_mistakes(mistakes: list, names, path: str) -> None:
    """evaluation/mistakes.png: (image, true id, predicted id, probability) in a grid."""
    columns = 4
    rows = max(1, -(-len(mistakes) // columns))
    figure = _figure(figsize=(3 * columns, 3.3 * rows))
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    for axes, (image, true, predicted, probability) in zip(grid.flat, mistakes):
        axes.imshow(image)
        axes.set_title(f"true {names[true]}\npredicted {names[predicted]} ({probability:.2f})", fontsize=9)
    if not mistakes:
        grid.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=80)


def plot_time(history: list[dict], path: str) -> None:
    """where_time_goes.png: each epoch's training seconds, split into the steps' computing and the
    wait for input (training.input_wait), so an input-bound epoch shows at a glance."""
    timed = [r for r in history if r.get("training_seconds")]
    figure = _figure(figsize=(8, 4))
    axes = figure.subplots()
    epochs = [r["epoch"] for r in timed]
    compute = [r["training_seconds"] * (1 - r["input_wait"]) for r in timed]
    wait = [r["training_seconds"] * r["input_wait"] for r in timed]
    axes.bar(epochs, compute, label="steps computing", color="tab:blue")
    axes.bar(epochs, wait, bottom=compute, label="waiting for input", color="tab:orange")
    for epoch, record in zip(epochs, timed):
        axes.text(
            epoch, record["training_seconds"], f"{record['input_wait']:.0%}", ha="center", va="bottom", fontsize=8
        )
    axes.set_xlabel("Epoch")
    axes.set_ylabel("seconds of training")
    axes.set_title("Where each epoch's time went (label: input wait)")
    _integer_ticks(axes.xaxis)
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_stages(stages: dict, path: str, title: str) -> None:
    """bench_input --plot: each pipeline stage's images/s as a bar against the model's training rates
    (lines), on a log scale: the bound is the shortest bar or the lowest line."""
    rates = {name: rate for name, rate in stages["pipeline"].items() if rate}
    figure = _figure(figsize=(8, 0.6 * len(rates) + 2))
    axes = figure.subplots()
    names = list(rates)
    axes.barh(names, [rates[n] for n in names], color="tab:blue")
    for y, name in enumerate(names):
        axes.text(rates[name], y, f" {rates[name]:,.0f}", va="center", fontsize=8)
    for (name, rate), style in zip(stages["model"].items(), ("-", "--")):
        if rate:
            axes.axvline(rate, color="tab:red", linestyle=style, label=f"model, {name}: {rate:,.0f} images/s")
    axes.set_xscale("log")
    axes.set_xlabel("images/s")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
