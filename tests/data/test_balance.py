"""Class imbalance: --class_weight=balanced and --balance=oversample."""

import collections
import os

import numpy as np
import pytest
from helpers.images import imbalanced_folder
from helpers.runs import tiny_train_config

from tfpipe.data import balance, pipeline, sources
from tfpipe.errors import TfpipeError


def test_balanced_weights_give_every_class_the_same_total():
    weights = balance.ClassBalance((90, 10, 0), class_weight="balanced").weights
    assert weights == pytest.approx((100 / 180, 100 / 20, 0.0))
    assert 90 * weights[0] == pytest.approx(10 * weights[1])


@pytest.mark.parametrize(
    "class_weight, how, message",
    [
        ("balanced", "oversample", "both correct the imbalance"),
        ("inverse", "none", "--class_weight='inverse'"),
        ("none", "undersample", "--balance='undersample'"),
    ],
)
def test_bad_settings_are_refused(class_weight, how, message):
    with pytest.raises(TfpipeError, match=message):
        balance.check(class_weight, how)


def _epoch(dataset):
    return [
        (image.tobytes(), int(label))
        for images, labels in dataset.as_numpy_iterator()
        for image, label in zip(images, labels)
    ]


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_oversampling_balances_every_epoch_exactly_and_reshuffles(tmp_path, cache):
    folder = imbalanced_folder(tmp_path / "f", (18, 2))
    source = sources.open_source(f"folder:{folder}", str(tmp_path / "d"))
    how = balance.ClassBalance(tuple(source.class_counts("train")), balance="oversample")
    config = pipeline.PipelineConfig(image_size=8, batch_size=4, seed=3, cache=cache)
    dataset = pipeline.build(source, "train", config, training=True, balance=how)
    assert int(dataset.cardinality()) == 9  # 36 examples: 18 of each class
    epochs = [_epoch(dataset)]
    if cache == "memory":  # the cache still holds each image: a later epoch reads no file
        for name in os.listdir(os.path.join(folder, "c1")):
            os.remove(os.path.join(folder, "c1", name))
    epochs.append(_epoch(dataset))
    for epoch in epochs:
        assert collections.Counter(label for _, label in epoch) == {0: 18, 1: 18}
        rare = collections.Counter(image for image, label in epoch if label == 1)
        assert sorted(rare.values()) == [9, 9]  # each rare image 9 times
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == sorted(epochs[1])


def test_class_weights_ride_with_training_batches_only(tmp_path):
    source = sources.open_source(f"folder:{imbalanced_folder(tmp_path / 'f', (6, 2))}", str(tmp_path / "d"))
    how = balance.ClassBalance(tuple(source.class_counts("train")), class_weight="balanced")
    config = pipeline.PipelineConfig(image_size=8, batch_size=4, seed=1)
    for images, labels, weights in pipeline.build(source, "train", config, training=True, balance=how):
        np.testing.assert_allclose(weights.numpy(), np.where(labels.numpy() == 1, 8 / 4, 8 / 12), rtol=1e-6)
    assert len(pipeline.build(source, "train", config, training=False, balance=how).element_spec) == 2


def _overlapping_features(counts, seed):
    """Two Gaussian classes of 8-dim features whose means are 1.5 standard deviations apart."""
    rng = np.random.default_rng(seed)
    direction = np.ones(8) / np.sqrt(8)
    x = np.concatenate([rng.normal(0, 1, (n, 8)) + 1.5 * label * direction for label, n in enumerate(counts)])
    y = np.concatenate([np.full(n, label) for label, n in enumerate(counts)])
    return x.astype(np.float32), y.astype(np.int64)


def _rare_recall_of_head(how: balance.ClassBalance) -> float:
    """Trains a head, as fast feature extraction does, on a 9:1 split; its recall of the rare class."""
    import keras

    from tfpipe.models import classifier as model_lib
    from tfpipe.training import features

    keras.utils.set_random_seed(0)
    train_x, train_y = _overlapping_features((360, 40), seed=1)
    test_x, test_y = _overlapping_features((200, 200), seed=2)
    inputs = keras.Input((8,))
    head = model_lib.TransferClassifier(inputs, keras.layers.Dense(1)(inputs))
    model_lib.compile_classifier(head, 2, model_lib.make_optimizer("adam", 0.05))
    head.fit(features.feature_datasets(train_x, train_y, 32, training=True, seed=0, balance=how), epochs=20, verbose=0)
    predicted = head.predict(test_x, verbose=0)[:, 0] > 0
    return float(predicted[test_y == 1].mean())


@pytest.mark.parametrize("how", [{"class_weight": "balanced"}, {"balance": "oversample"}])
def test_the_rare_class_recall_rises_against_the_unweighted_run(how):
    plain = _rare_recall_of_head(balance.ClassBalance((360, 40)))
    corrected = _rare_recall_of_head(balance.ClassBalance((360, 40), **how))
    # The unweighted head's threshold sits log(9) / 1.5 above the midpoint, so it finds about a
    # quarter of the rare class; the balanced ones put it near the midpoint, about three quarters.
    assert plain < 0.35 and corrected > 0.55 and corrected - plain > 0.3, (plain, corrected)


def test_the_classifiers_train_step_weights_its_loss_by_class():
    import keras

    from tfpipe.models import classifier as model_lib

    inputs = keras.Input((3,))
    classifier = model_lib.TransferClassifier(inputs, keras.layers.Dense(1, kernel_initializer="ones")(inputs))
    model_lib.compile_classifier(classifier, 2, keras.optimizers.SGD(0.0))  # no update: the loss as computed
    x = np.array([[1.0, 0, 0], [0, -1, 0], [0, 0, 2.0], [0.5, 0, 0]], np.float32)
    y = np.array([0, 1, 1, 0])
    weights = np.array([0.5, 3.0, 3.0, 0.5], np.float32)
    logits = x.sum(axis=1)
    per_example = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
    loss = classifier.train_on_batch(x, y, sample_weight=weights, return_dict=True)["loss"]
    assert loss == pytest.approx(float((per_example * weights).sum() / 4), rel=1e-5)
    assert loss != pytest.approx(float(per_example.mean()), rel=1e-3)


def test_train_records_the_class_counts_and_the_correction(tmp_path, data_dir):
    from tfpipe.training.train import train

    folder = imbalanced_folder(tmp_path / "f", (27, 3))
    config = tiny_train_config(
        tmp_path,
        data_dir,
        dataset=f"folder:{folder}",
        train_split="train",
        val_split="train[:20%]",
        test_split="",
        augment="none",
        weights="none",
        initial_epochs=1,
        fine_tune_epochs=0,
        class_weight="balanced",
    )
    logged = []
    results = train(config, log=logged.append)
    assert results["class_counts"] == {"c0": 27, "c1": 3}
    assert results["class_weights"] == {"c0": pytest.approx(30 / 54, abs=1e-4), "c1": 5.0}
    assert results["examples_per_epoch"] == 30
    assert any("--class_weight=balanced" in line for line in logged)
