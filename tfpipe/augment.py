"""Augmentation as Keras preprocessing layers, and where they run.

A spec is a comma-separated list of NAME or NAME=VALUE:

    flip=horizontal,rotation=0.2      (the default: the tutorial's)
    flip,rotation=0.1,zoom=0.1,contrast=0.2,translation=0.1,brightness=0.2
    none

Placement "model" puts the layers inside the model, after the cast to float and
before the backbone's scaling: they run on the accelerator and only when the
model is called with training=True. Placement "pipeline" runs them in tf.data
after batching, on training batches only. Either way the layers see float images
in [0, 255].
"""

from __future__ import annotations

import dataclasses

import keras

from tfpipe.errors import TfpipeError

DEFAULT_AUGMENT = "flip=horizontal,rotation=0.2"
PLACEMENTS = ("model", "pipeline")
_FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


@dataclasses.dataclass(frozen=True)
class _Kind:
    default: str
    make: object  # (value, seed, dtype) -> keras layer
    help: str


def _factor(name, text, upper):
    try:
        value = float(text)
    except ValueError:
        raise TfpipeError(f"--augment: {name}={text!r} needs a number, e.g. {name}={AUGMENTATIONS[name].default}") from None
    if not 0.0 < value <= upper:
        raise TfpipeError(f"--augment: {name}={text} is out of range; use a factor in (0, {upper}]")
    return value


def _flip(text, seed, dtype):
    if text not in _FLIP_MODES:
        raise TfpipeError(f"--augment: flip={text!r} is not a flip mode; use one of {', '.join(_FLIP_MODES)}")
    return keras.layers.RandomFlip(text, seed=seed, dtype=dtype)


AUGMENTATIONS = {
    "flip": _Kind("horizontal", _flip, "RandomFlip: horizontal, vertical or horizontal_and_vertical"),
    "rotation": _Kind(
        "0.2",
        lambda text, seed, dtype: keras.layers.RandomRotation(
            _factor("rotation", text, 1.0), fill_mode="reflect", seed=seed, dtype=dtype
        ),
        "RandomRotation: a fraction of a full turn, either way",
    ),
    "zoom": _Kind(
        "0.1",
        lambda text, seed, dtype: keras.layers.RandomZoom(
            _factor("zoom", text, 0.9), fill_mode="reflect", seed=seed, dtype=dtype
        ),
        "RandomZoom: a fraction of the size, in or out",
    ),
    "contrast": _Kind(
        "0.2",
        lambda text, seed, dtype: keras.layers.RandomContrast(
            _factor("contrast", text, 1.0), value_range=(0, 255), seed=seed, dtype=dtype
        ),
        "RandomContrast: a fraction, either way",
    ),
    "translation": _Kind(
        "0.1",
        lambda text, seed, dtype: keras.layers.RandomTranslation(
            _factor("translation", text, 1.0),
            _factor("translation", text, 1.0),
            fill_mode="reflect",
            seed=seed,
            dtype=dtype,
        ),
        "RandomTranslation: a fraction of the size, both axes",
    ),
    "brightness": _Kind(
        "0.2",
        lambda text, seed, dtype: keras.layers.RandomBrightness(
            _factor("brightness", text, 1.0), value_range=(0, 255), seed=seed, dtype=dtype
        ),
        "RandomBrightness: a fraction of the value range, either way",
    ),
}


def parse(spec: str) -> tuple[tuple[str, str], ...]:
    """The (name, value) steps of an --augment spec; () for 'none'. Raises TfpipeError."""
    spec = (spec or "").strip()
    if spec.lower() in ("none", ""):
        return ()
    steps = []
    for item in spec.split(","):
        name, _, value = item.strip().partition("=")
        name = name.strip().lower()
        if name not in AUGMENTATIONS:
            raise TfpipeError(
                f"--augment: unknown augmentation {name!r}; use 'none' or a comma-separated list of "
                f"{', '.join(AUGMENTATIONS)} (e.g. {DEFAULT_AUGMENT})"
            )
        steps.append((name, value.strip() or AUGMENTATIONS[name].default))
    build(tuple(steps))  # validates every value now, not when the model is built
    return tuple(steps)


def build(
    steps: tuple[tuple[str, str], ...], seed: int | None = None, dtype: str | None = None
) -> keras.Sequential | None:
    """A Sequential of augmentation layers named "augmentation", or None for no steps.

    dtype: "float32" keeps augmentation in full precision under a mixed policy.
    """
    if not steps:
        return None
    layers = [
        AUGMENTATIONS[name].make(value, None if seed is None else seed + i, dtype)
        for i, (name, value) in enumerate(steps)
    ]
    return keras.Sequential(layers, name="augmentation")


def check_placement(placement: str) -> str:
    if placement not in PLACEMENTS:
        raise TfpipeError(f"--augment_on={placement!r}: use 'model' (on the accelerator) or 'pipeline' (in tf.data)")
    return placement
