"""Fine-tuning on cached activations: run the frozen bottom of the base once, then train
the layers from --fine_tune_at up on what it gave.

In phase 2 the layers below the fine-tune boundary are frozen and run in inference
mode; with no augmentation, nothing random runs below the boundary either, so they give
the same activations for an image in every epoch. Fast feature extraction already
computes phase 1's features once at the top of the base; this does the same for phase 2
at the boundary: the bottom runs once over the training and validation splits, and each
epoch trains the top of the base and the head on the stored activations.

The top model shares its layers with the classifier (as head_of does for phase 1), so
training it trains the classifier: best.keras and final.keras hold the whole model and
predict sees no difference. The top of the base runs in inference mode (InferenceModeBase),
as the whole base does in the classifier, so its BatchNorm layers keep their statistics.

Memory: examples x the boundary's shape x the activations' bytes, for the training and
validation splits together, at twice that at their peak; the run's memory plan
(training.memory_plan) decides against the memory budget whether they fit, or the run
fine-tunes end to end and says why.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfpipe.models import classifier as model_lib
from tfpipe.models import folding
from tfpipe.training import features


@dataclasses.dataclass(frozen=True)
class Boundary:
    """Where the frozen bottom of the base hands over to the layers that train."""

    tensors: tuple  # the bottom's outputs that the top consumes (KerasTensors of the base's graph)

    @property
    def names(self) -> list[str]:
        return [tensor._keras_history.operation.name for tensor in self.tensors]

    @property
    def bytes_per_example(self) -> int:
        return sum(int(np.prod(t.shape[1:])) * np.dtype(t.dtype).itemsize for t in self.tensors)

    def describe(self) -> str:
        return ", ".join(
            f"{name} ({'x'.join(str(d) for d in t.shape[1:])}, {t.dtype})" for name, t in zip(self.names, self.tensors)
        )


def boundary(base: keras.Model, fine_tune_index: int) -> Boundary | None:
    """The outputs of base.layers[:fine_tune_index] that the layers from fine_tune_index on
    consume (a skip connection across the boundary adds its tensor); None when nothing below
    the boundary computes (fine-tuning the whole base)."""
    frozen = {id(layer) for layer in base.layers[:fine_tune_index]}
    crossing, seen = [], set()
    for layer in base.layers[fine_tune_index:]:
        for tensor in keras.tree.flatten(layer.input):
            producer = tensor._keras_history.operation
            if id(producer) in frozen and id(tensor) not in seen:
                seen.add(id(tensor))
                crossing.append(tensor)
    if not crossing or all(isinstance(t._keras_history.operation, keras.layers.InputLayer) for t in crossing):
        return None
    return Boundary(tuple(crossing))


def split_classifier(classifier: keras.Model, base: keras.Model, at: Boundary):
    """(bottom, top): uint8 images -> the boundary's activations, and those activations -> logits,
    both sharing the classifier's layers."""
    x = model_lib.below_base(classifier, classifier.input)
    bottom_of_base = keras.Model(base.input, list(at.tensors), name="base_bottom")
    bottom = keras.Model(classifier.input, bottom_of_base(x), name="bottom")
    top_of_base = keras.Model(list(at.tensors), base.output, name="base_top")
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=f"activations_{i}") for i, t in enumerate(at.tensors)]
    x = model_lib.InferenceModeBase(top_of_base, name="base_top_inference")(inputs if len(inputs) > 1 else inputs[0])
    x = model_lib.above_base(classifier, x)
    top = model_lib.TransferClassifier(inputs, x, name="top")
    return bottom, top


def extract(
    bottom: keras.Model, datasets: list[tf.data.Dataset], counts: list[int]
) -> list[tuple[tuple[np.ndarray, ...], np.ndarray]]:
    """(activations, labels) for every example of each dataset (counts[i] examples), in one pass each,
    through `bottom` with its batch norms folded into its convolutions (tfpipe.models.folding)."""
    return features.run_once(folding.FoldedInference(bottom), datasets, counts)
