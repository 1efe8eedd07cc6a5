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
    check: object  # text -> value, or TfpipeError
    make: object  # (value, seed, dtype) -> keras layer


def _factor(name, upper):
    def check(text):
        try:
            value = float(text)
        except ValueError:
            raise TfpipeError(
                f"--augment: {name}={text!r} needs a number, e.g. {name}={AUGMENTATIONS[name].default}"
            ) from None
        if not 0.0 < value <= upper:
            raise TfpipeError(f"--augment: {name}={text} is out of range; use a factor in (0, {upper}]")
        return value

    return check


def _flip_mode(text):
    if text not in _FLIP_MODES:
        raise TfpipeError(f"--augment: flip={text!r} is not a flip mode; use one of {', '.join(_FLIP_MODES)}")
    return text


AUGMENTATIONS = {
    # RandomFlip: horizontal, vertical or horizontal_and_vertical
    "flip": _Kind(
        "horizontal", _flip_mode, lambda mode, seed, dtype: keras.layers.RandomFlip(mode, seed=seed, dtype=dtype)
    ),
    # RandomRotation: a fraction of a full turn, either way
    "rotation": _Kind(
        "0.2",
        _factor("rotation", 1.0),
        lambda f, seed, dtype: keras.layers.RandomRotation(f, fill_mode="reflect", seed=seed, dtype=dtype),
    ),
    # RandomZoom: a fraction of the size, in or out
    "zoom": _Kind(
        "0.1",
        _factor("zoom", 0.9),
        lambda f, seed, dtype: keras.layers.RandomZoom(f, fill_mode="reflect", seed=seed, dtype=dtype),
    ),
    # RandomContrast: a fraction, either way
    "contrast": _Kind(
        "0.2",
        _factor("contrast", 1.0),
        lambda f, seed, dtype: keras.layers.RandomContrast(f, value_range=(0, 255), seed=seed, dtype=dtype),
    ),
    # RandomTranslation: a fraction of the size, both axes
    "translation": _Kind(
        "0.1",
        _factor("translation", 1.0),
        lambda f, seed, dtype: keras.layers.RandomTranslation(f, f, fill_mode="reflect", seed=seed, dtype=dtype),
    ),
    # RandomBrightness: a fraction of the value range, either way
    "brightness": _Kind(
        "0.2",
        _factor("brightness", 1.0),
        lambda f, seed, dtype: keras.layers.RandomBrightness(f, value_range=(0, 255), seed=seed, dtype=dtype),
    ),
}


def parse(spec: str) -> tuple[tuple[str, str], ...]:
    """The (name, value) steps of an --augment spec; () for 'none'. Raises TfpipeError.

    Only parses: no TensorFlow object is made (MultiWorkerMirroredStrategy must come first)."""
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
        value = value.strip() or AUGMENTATIONS[name].default
        AUGMENTATIONS[name].check(value)  # now, not when the model is built
        steps.append((name, value))
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
        AUGMENTATIONS[name].make(AUGMENTATIONS[name].check(value), None if seed is None else seed + i, dtype)
        for i, (name, value) in enumerate(steps)
    ]
    return keras.Sequential(layers, name="augmentation")


def check_placement(placement: str, *, data_service: bool = False) -> str:
    """`placement`, checked; data_service: the pipeline runs on tf.data service workers."""
    if placement not in PLACEMENTS:
        raise TfpipeError(f"--augment_on={placement!r}: use 'model' (on the accelerator) or 'pipeline' (in tf.data)")
    if placement == "pipeline" and data_service:
        # Keras' random layers keep their seed generator's state in variables of
        # this process, which a pipeline serialized to the service's workers cannot read.
        raise TfpipeError(
            "--augment_on=pipeline cannot run on the tf.data service: Keras augmentation layers keep "
            "random-seed variables in the trainer's process; use --augment_on=model with --data_service"
        )
    return placement
