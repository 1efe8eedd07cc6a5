"""The transfer-learning tutorial's recipe, as its code does it, for bench_train to race.

TensorFlow's "Transfer learning and fine-tuning" tutorial (cats_vs_dogs, the tfds
version): the classic pipeline (map(format_example) to float32 in [-1, 1], shuffle(1000),
batch(32), no cache; pipelines.classic_pipeline on TensorFlow's defaults), augmentation
layers in the model, the base frozen for the initial epochs with Adam at 1e-4, then
unfrozen from fine_tune_at with RMSprop at a tenth of that, fit(initial_epoch=
history.epoch[-1]) continuing the count, and the test split evaluated at the end.

The base is the one tfpipe is given (offline, the tutorial's MobileNetV2 ImageNet weights
cannot be downloaded here; EfficientNet-Lite0's ship in a package), so the race compares
the recipes, not the networks. Lite0 expects (x - 127) / 128, within 0.4% of the
tutorial's x / 127.5 - 1.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from tfpipe.bench.pipelines import CLASSIC_TF_DEFAULTS, classic_pipeline

TUTORIAL_LEARNING_RATE = 1e-4  # base_learning_rate
IMAGE_SIZE = 160  # IMG_SIZE, MobileNetV2 at 160 px


class _EpochTimes(keras.callbacks.Callback):
    def __init__(self, records: list, phase: str):
        super().__init__()
        self.records, self.phase = records, phase

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.records.append(
            {
                "epoch": epoch + 1,
                "phase": self.phase,
                "val_accuracy": float(logs.get("val_accuracy", np.nan)),
                "val_loss": float(logs.get("val_loss", np.nan)),
                "finished_at": time.time(),
            }
        )


def run(
    source,
    splits: dict,
    base: keras.Model,
    *,
    image_size: int,
    initial_epochs: int = 10,
    fine_tune_epochs: int = 10,
    fine_tune_at: int = 100,
    batch_size: int = 32,
    verbose: int = 0,
) -> dict:
    """Trains the tutorial's way; returns the epochs' validation accuracies with their
    end times (Unix seconds) and the test accuracy."""
    train, validation, test = (
        classic_pipeline(source, splits[role], image_size, batch_size, mode=CLASSIC_TF_DEFAULTS)
        for role in ("train", "validation", "test")
    )
    num_classes = len(source.class_names)
    augmentation = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)])
    base.trainable = False
    inputs = keras.Input(shape=(image_size, image_size, 3))
    x = augmentation(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(1 if num_classes == 2 else num_classes)(x)
    model = keras.Model(inputs, outputs)
    if num_classes == 2:
        loss, accuracy = (
            keras.losses.BinaryCrossentropy(from_logits=True),
            keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
        )
    else:
        loss, accuracy = keras.losses.SparseCategoricalCrossentropy(from_logits=True), "accuracy"

    records: list = []
    model.compile(optimizer=keras.optimizers.Adam(TUTORIAL_LEARNING_RATE), loss=loss, metrics=[accuracy])
    history = model.fit(
        train,
        epochs=initial_epochs,
        validation_data=validation,
        verbose=verbose,
        callbacks=[_EpochTimes(records, "feature_extraction")],
    )
    if fine_tune_epochs:
        base.trainable = True
        for layer in base.layers[:fine_tune_at]:
            layer.trainable = False
        model.compile(optimizer=keras.optimizers.RMSprop(TUTORIAL_LEARNING_RATE / 10), loss=loss, metrics=[accuracy])
        model.fit(
            train,
            epochs=initial_epochs + fine_tune_epochs,
            initial_epoch=history.epoch[-1],
            validation_data=validation,
            verbose=verbose,
            callbacks=[_EpochTimes(records, "fine_tune")],
        )
    _, test_accuracy = model.evaluate(test, verbose=verbose)
    return {"epochs": records, "test_accuracy": float(test_accuracy)}
