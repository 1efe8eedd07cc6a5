"""Which layers of a base train: --fine_tune_at resolved to a layer index, freezing and unfreezing.

Used by training's schedule and by bench_input's model measurement, which must not import
training/.
"""

from __future__ import annotations

import keras

from tfpipe.errors import TfpipeError


def resolve_fine_tune_at(base: keras.Model, fine_tune_at: str | int) -> int:
    """--fine_tune_at (a layer index or a layer name) -> index into base.layers."""
    layers = base.layers
    text = str(fine_tune_at).strip()
    try:
        index = int(text)
    except ValueError:
        names = [layer.name for layer in layers]
        if text not in names:
            raise TfpipeError(
                f"--fine_tune_at={text!r} is not a layer of {base.name}, which has {len(layers)} layers "
                f"(indices 0-{len(layers) - 1}, e.g. {names[len(names) // 2]!r}); give an index or a layer name"
            ) from None
        return names.index(text)
    if not 0 <= index < len(layers):
        raise TfpipeError(
            f"--fine_tune_at={index} is out of range: {base.name} has {len(layers)} layers, so use 0 "
            f"(fine-tune the whole base) to {len(layers) - 1}, or --fine_tune_epochs=0 to keep it frozen"
        )
    return index


def freeze(base: keras.Model) -> None:
    base.trainable = False


def unfreeze_from(base: keras.Model, index: int) -> None:
    """Trains base.layers[index:], freezes the rest. BatchNorm layers stay in
    inference mode either way (the model runs the base with training=False)."""
    base.trainable = True
    for layer in base.layers[:index]:
        layer.trainable = False
