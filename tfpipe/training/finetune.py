"""The two-phase schedule (which layers of the base train: models.trainable).

Phase 1 (feature extraction): the whole base is frozen and only the head trains.
Phase 2 (fine-tuning): layers of the base from `fine_tune_at` on are unfrozen and
train with the head at a lower learning rate. The three classic strategies:

    base frozen throughout      --fine_tune_epochs=0
    top of the base retrained   --fine_tune_at=100 (MobileNetV2 has 154 layers)
    whole base retrained        --fine_tune_at=0

Epochs are numbered from 1 across both phases: phase 2 continues from the number
of epochs phase 1 completed (not from history.epoch[-1], which repeats one).
"""

from __future__ import annotations

import dataclasses

import keras

from tfpipe.models.classifier import BASE_LAYER

FEATURE_EXTRACTION = "feature_extraction"
FINE_TUNE = "fine_tune"


def trainable_counts(classifier: keras.Model, base: keras.Model, fine_tune_index: int) -> dict:
    """How many variables each phase trains, read without changing what is trainable.

    Counted on the model as built, where every layer is still trainable: feature
    extraction trains what lies outside the base, fine-tuning that plus the
    trainable weights of base.layers[fine_tune_index:].
    """
    in_base = {id(variable) for variable in base.weights}
    head = sum(1 for variable in classifier.trainable_variables if id(variable) not in in_base)
    tuned = sum(len(layer.trainable_weights) for layer in base.layers[fine_tune_index:])
    return {FEATURE_EXTRACTION: head, FINE_TUNE: head + tuned}


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    first_epoch: int  # 0-based, as Keras counts: fit(initial_epoch=first_epoch)
    end_epoch: int  # fit(epochs=end_epoch)
    learning_rate: float

    @property
    def num_epochs(self) -> int:
        return self.end_epoch - self.first_epoch


def schedule(
    initial_epochs: int,
    fine_tune_epochs: int,
    learning_rate: float,
    fine_tune_lr_factor: float,
    stopped_early: dict | None = None,
):
    """The phases of a run, skipping empty ones. A phase that stopped early (phase -> the epoch it
    stopped at, --early_stopping) ends there, and the next one continues the count from it."""
    stopped_early = stopped_early or {}
    phases, start = [], 0
    for name, epochs, rate in (
        (FEATURE_EXTRACTION, initial_epochs, learning_rate),
        (FINE_TUNE, fine_tune_epochs, learning_rate * fine_tune_lr_factor),
    ):
        if epochs > 0:
            phases.append(Phase(name, start, start + epochs, rate))
            start = stopped_early.get(name, start + epochs)
    return phases


def calibrate_batchnorm(classifier: keras.Model, base: keras.Model, batches) -> int:
    """Sets the BatchNorm statistics of a randomly initialized base from data.

    A base built with weights=None has no statistics worth protecting: its moving
    means and variances are the initial 0 and 1, which leave a deep random
    network's activations vanishing (MobileNetV2's pooled features come out
    around 1e-12), so a frozen random base gives the head nothing to learn from.
    Averaging the batch statistics of a few training batches, with no weight
    update, gives normalized random features instead. Returns the images used.
    """
    layers = [layer for layer in base._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    to_base_input = keras.Model(classifier.input, classifier.get_layer(BASE_LAYER).input)
    momenta = [layer.momentum for layer in layers]
    images_seen = 0
    try:
        for step, images in enumerate(batches):
            for layer in layers:
                layer.momentum = step / (step + 1)  # a running average over the batches so far
            base(to_base_input(images, training=False), training=True)
            images_seen += int(images.shape[0])
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return images_seen
