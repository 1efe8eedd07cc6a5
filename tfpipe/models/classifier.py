"""The classifier: a Functional graph from uint8 images to logits, in a Model
subclass that owns its train_step and test_step.

    uint8 image -> ToFloat -> augmentation (training only) -> backbone scaling
      -> base(training=False) -> GlobalAveragePooling -> Dropout -> Dense(logits)

The base runs in inference mode whatever the outer call says, so its
BatchNormalization layers keep their moving statistics (learned on ImageNet)
while their gamma and beta train. Keras 3 makes this take more than the
tutorial's `base(x, training=False)`: a Functional model passes its own
`training` value to every layer it calls, overriding the False written at graph
construction. The base is therefore wrapped in InferenceModeBase, whose call
takes no `training` argument and calls the base with training=False.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from tfpipe.errors import TfpipeError
from tfpipe.models import backbones, folding, step_timer

AUGMENTATION_LAYER = "augmentation"
BASE_LAYER = "base"
POOLING_LAYER = "pooling"
DROPOUT_LAYER = "head_dropout"
LOGITS_LAYER = "logits"
OPTIMIZERS = ("rmsprop", "adam", "sgd")


@keras.saving.register_keras_serializable(package="tfpipe")
class ToFloat(keras.layers.Layer):
    """uint8 images -> float32 in [0, 255], on the accelerator."""

    def call(self, images):
        return ops.cast(images, "float32")


@keras.saving.register_keras_serializable(package="tfpipe")
class InferenceModeBase(keras.layers.Layer):
    """Runs a pretrained base with training=False, always (see the module docstring)."""

    def __init__(self, base: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.base = base

    def build(self, input_shape):
        self.base.build(input_shape)
        self.built = True

    def call(self, images):
        return self.base(images, training=False)

    def compute_output_shape(self, input_shape):
        return self.base.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "base": keras.saving.serialize_keras_object(self.base)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["base"] = keras.saving.deserialize_keras_object(config["base"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfpipe")
class TransferClassifier(keras.Model):
    """A Functional model whose training step is written out with public Keras 3 APIs.

    It computes what Keras' built-in step computes (a test checks the weights
    match), correct under a tf.distribute strategy (Keras scales the loss by
    1/replicas inside compute_loss; the reported loss is unscaled) and under
    mixed precision (the optimizer scales the loss and unscales the gradients).
    """

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

        def step():
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
                scaled_loss = self.optimizer.scale_loss(loss)
            variables = self.trainable_variables
            gradients = tape.gradient(scaled_loss, variables)
            self.optimizer.apply(gradients, variables)
            return y_pred, loss

        y_pred, loss = step_timer.timed_step(self, step, y)  # how long the step computed: training.input_wait
        return self._metrics_after_step(x, y, y_pred, sample_weight, loss)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
        return self._metrics_after_step(x, y, y_pred, sample_weight, loss)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3 (TF backend) builds a distributed model from its first batch,
        # first reducing that batch across replicas, only to learn its shapes.
        # Under MultiWorkerMirroredStrategy the reduce of an (x, y) structure
        # fails ("Attempt to convert a value (PerReplica...)", keras-team/keras
        # #20585), and under MirroredStrategy it fails when a replica's share of
        # a last, partial batch is empty. One replica's share has the shapes.
        if iterator is not None and getattr(self, "_distribute_strategy", None) is not None:
            for _, _, batches in iterator:
                data_batch = _one_replica(next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _metrics_after_step(self, x, y, y_pred, sample_weight, loss):
        # A sample weight of 0 marks a padding example (distribute.replica_batches):
        # it counts in no metric. Class weights (balance.py) scale the loss but not
        # the metrics, which count examples, so metrics see 1 for every real example.
        batch_size = ops.cast(ops.shape(y_pred)[0], "float32")
        if sample_weight is None:
            counted, examples = None, batch_size
        else:
            counted = ops.cast(ops.greater(sample_weight, 0), "float32")
            examples = ops.sum(counted)
        # compute_loss divided by the batch and by the number of replicas, so that
        # gradients sum right across them; the "loss" metric reports the mean over
        # the real examples: the batch's loss sum, over its example count.
        strategy = tf.distribute.get_strategy()
        loss_sum = ops.cast(loss, "float32") * strategy.num_replicas_in_sync * batch_size
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(ops.divide_no_nan(loss_sum, examples), sample_weight=examples)
        results = self.compute_metrics(x, y, y_pred, sample_weight=counted)
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Keras averages step results across workers with reduce(MEAN, axis=0),
            # which fails on scalars (keras-team/keras#20585); as shape [1] they
            # average to the same scalar.
            results = {name: ops.reshape(value, [1]) for name, value in results.items()}
        return results


def _one_replica(batch):
    """The first local replica's share of a (nested) distributed batch."""
    # By hand: tf.nest and keras.tree both see into PerReplica values.
    if isinstance(batch, tf.distribute.DistributedValues):
        return batch.values[0]
    if isinstance(batch, (tuple, list)):
        return type(batch)(_one_replica(item) for item in batch)
    if isinstance(batch, dict):
        return {key: _one_replica(item) for key, item in batch.items()}
    return batch


def build_classifier(
    backbone: backbones.Backbone,
    base: keras.Model,
    image_size: int,
    num_classes: int,
    dropout: float = 0.2,
    augmentation: keras.layers.Layer | None = None,
    seed: int | None = None,
    frozen_statistics: bool = True,
) -> TransferClassifier:
    """The Functional classifier around `base`; one logit for two classes, else one per class.

    frozen_statistics=False lets the base's BatchNorm layers follow the `training`
    flag, as training a base from scratch needs (tfpipe.training.pretrain); fine-tuning a
    pretrained base keeps them frozen (see the module docstring).
    """
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
    x = ToFloat(name="to_float", dtype="float32")(inputs)
    if augmentation is not None:
        x = augmentation(x)
    if backbone.scaling is not None:
        x = backbone.scaling()(x)
    x = InferenceModeBase(base, name=BASE_LAYER)(x) if frozen_statistics else base(x)
    x = keras.layers.GlobalAveragePooling2D(name=POOLING_LAYER)(x)
    x = keras.layers.Dropout(dropout, seed=seed, name=DROPOUT_LAYER)(x)
    # Logits stay float32 under mixed precision, for a stable loss.
    outputs = keras.layers.Dense(logit_units(num_classes), dtype="float32", name=LOGITS_LAYER)(x)
    return TransferClassifier(inputs, outputs, name=f"{backbone.name}_classifier")


def logit_units(num_classes: int) -> int:
    return 1 if num_classes == 2 else num_classes


def loss_and_metrics(num_classes: int):
    """The loss, and the metrics to compile as weighted_metrics: the steps pass them
    a 0/1 weight that leaves padding examples out (TransferClassifier._metrics_after_step)."""
    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(from_logits=True), [
            keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")
        ]
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True), [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    ]


def check_num_classes(num_classes: int, dataset: str) -> None:
    """A classifier tells at least two classes apart: TfpipeError otherwise, before training."""
    if num_classes < 2:
        raise TfpipeError(
            f"{dataset} has {num_classes} class{'' if num_classes == 1 else 'es'}; a classifier needs at least 2"
        )


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r}; use one of {OPTIMIZERS}")


def compile_classifier(
    model: keras.Model, num_classes: int, optimizer: keras.optimizers.Optimizer, jit_compile: bool = False
) -> None:
    loss, metrics = loss_and_metrics(num_classes)
    model.compile(optimizer=optimizer, loss=loss, weighted_metrics=metrics, jit_compile=jit_compile)


def base_of(model: keras.Model) -> keras.Model:
    """The pretrained base nested inside a classifier."""
    return model.get_layer(BASE_LAYER).base


def feature_extractor(model: keras.Model) -> keras.Model:
    """uint8 images -> pooled base features, with the classifier's own layers (inference mode)."""
    return keras.Model(model.input, model.get_layer(POOLING_LAYER).output, name="features")


def folded_feature_extractor(model: keras.Model):
    """feature_extractor(model) as a function for one pass in inference, the base's
    BatchNormalization folded into its convolutions (tfpipe.models.folding): the same features
    to float rounding, faster."""
    base = folding.FoldedInference(base_of(model))
    pooling = model.get_layer(POOLING_LAYER)
    return lambda images: pooling(base(below_base(model, images)))


def below_base(model: keras.Model, x):
    """`x` through the classifier's layers below its base (in inference): the cast to float and
    the backbone's scaling."""
    for layer in _around_base(model)[0]:
        x = layer(x)
    return x


def above_base(model: keras.Model, x):
    """The base's output `x` through the classifier's layers above it: pooling, dropout, logits."""
    for layer in _around_base(model)[1]:
        x = layer(x)
    return x


def _around_base(model: keras.Model) -> tuple[list, list]:
    """The classifier's inference layers (_inference_layers) below its base, and above it."""
    layers = _inference_layers(model)
    at = [layer.name for layer in layers].index(BASE_LAYER)
    return layers[:at], layers[at + 1 :]


def _inference_layers(model: keras.Model) -> list:
    """The classifier's layers after its input, in order, as inference runs them: without the
    augmentation layer (see inference_graph)."""
    return [layer for layer in model.layers[1:] if layer.name != AUGMENTATION_LAYER]


@keras.saving.register_keras_serializable(package="tfpipe")
class Probabilities(keras.layers.Layer):
    """Logits -> one probability per class: softmax, or for a two-class model's single logit
    [1 - sigmoid, sigmoid], so every exported model gives as many scores as it has labels
    (what MediaPipe's image classifier reads against labels.txt)."""

    def call(self, logits):
        if logits.shape[-1] == 1:
            positive = ops.sigmoid(logits)
            return ops.concatenate([1.0 - positive, positive], axis=-1)
        return ops.softmax(logits, axis=-1)


def inference_graph(model: keras.Model, probabilities: bool = False) -> keras.Model:
    """The classifier as an exported file runs it: the same layers (shared, not copied)
    from the uint8 image to the logits (or, with `probabilities`, to one probability per
    class), without the augmentation layer.

    In inference mode augmentation passes images through, but its random ops stay in
    the traced graph, where ONNX has no kernel for them (tf2onnx 1.17:
    StatelessRandomUniformV2, ImageProjectiveTransformV3) and LiteRT would need
    TensorFlow's own kernels. tfpipe's classifiers are a chain of layers, so the
    graph is rebuilt by calling each of them in order.
    """
    inputs = keras.Input(shape=model.input_shape[1:], dtype=model.inputs[0].dtype, name="image")
    x = inputs
    for layer in _inference_layers(model):
        x = layer(x)
    if probabilities:
        x = Probabilities(name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, x, name=f"{model.name}_inference")


def head_of(model: keras.Model) -> TransferClassifier:
    """Pooled features -> logits through the classifier's own Dropout and Dense layers.

    The layers are shared, not copied: training this head trains the classifier's head.
    """
    features = keras.Input(shape=model.get_layer(POOLING_LAYER).output.shape[1:], name="features")
    x = model.get_layer(DROPOUT_LAYER)(features)
    outputs = model.get_layer(LOGITS_LAYER)(x)
    return TransferClassifier(features, outputs, name="head")
