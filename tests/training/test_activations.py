"""Fine-tuning on cached activations: the boundary, the same step as end to end, and the
fallback past the memory limit."""

import keras
import numpy as np
import pytest
from helpers import tiny_backbone
from helpers.runs import tiny_train_config

from tfpipe.models import backbones, trainable
from tfpipe.models import classifier as model_lib
from tfpipe.training import activations


def _base_with_a_skip_connection():
    """conv_a -> bn_a -> conv_b, and add(bn_a, conv_b) -> conv_c: a skip across conv_b."""
    inputs = keras.Input((16, 16, 3))
    a = keras.layers.BatchNormalization(name="bn_a")(keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs))
    b = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(a)
    added = keras.layers.Add(name="add")([a, b])
    out = keras.layers.BatchNormalization(name="bn_c")(keras.layers.Conv2D(6, 3, name="conv_c")(added))
    return keras.Model(inputs, out, name="small_base")


def _names(base, at):
    return [t._keras_history.operation.name for t in at.tensors]


def test_the_boundary_is_every_tensor_that_crosses_it():
    base = _base_with_a_skip_connection()
    names = [layer.name for layer in base.layers]
    assert _names(base, activations.boundary(base, names.index("conv_b"))) == ["bn_a"]
    # Fine-tuning from add: conv_b is frozen too, and the skip's bn_a crosses with it.
    assert sorted(_names(base, activations.boundary(base, names.index("add")))) == ["bn_a", "conv_b"]
    assert activations.boundary(base, 0) is None and activations.boundary(base, 1) is None  # nothing frozen computes
    at = activations.boundary(base, names.index("add"))
    assert at.bytes_per_example == 2 * 16 * 16 * 4 * 4


def test_extracted_activations_are_the_bottoms_outputs_with_its_batch_norms_folded(folded_inferences):
    """At `add` the boundary is bn_a's output (conv_a and bn_a fold into one) and conv_b's raw
    output; bn_a's statistics far from a fresh layer's."""
    import tensorflow as tf

    made = folded_inferences
    keras.utils.set_random_seed(2)
    base = _base_with_a_skip_connection()
    rng = np.random.default_rng(4)
    norm = base.get_layer("bn_a")
    norm.set_weights([rng.uniform(0.5, 2.0, w.shape) for w in norm.weights])
    model = model_lib.build_classifier(backbones.get("mobilenet_v2"), base, 16, 3)
    at = activations.boundary(base, [layer.name for layer in base.layers].index("add"))
    bottom, _ = activations.split_classifier(model, base, at)
    images = rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    batches = tf.data.Dataset.from_tensor_slices((images, np.arange(6) % 3)).batch(4)
    ((outputs, labels),) = activations.extract(bottom, [batches], [6])
    expected = bottom(images, training=False)
    assert len(outputs) == 2 and made and made[-1].folded == ["bn_a"]  # the pass's own (made last: outermost)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(labels, np.arange(6) % 3)


def test_efficientnet_lite0_at_layer_100_caches_one_tensor():
    base = backbones.get("efficientnet_lite0").build_base(32, None)
    at = activations.boundary(base, 100)
    assert len(at.tensors) == 1 and tuple(at.tensors[0].shape[1:]) == (1, 1, 672)  # 32 px, stride 32
    assert base.layers[100].input is at.tensors[0]


@pytest.mark.parametrize("fine_tune_from", ["conv_b", "add"])
def test_one_step_on_cached_activations_gives_the_weights_of_one_step_end_to_end(fine_tune_from):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    models = []
    for _ in range(2):
        keras.utils.set_random_seed(1)
        base = _base_with_a_skip_connection()
        model = model_lib.build_classifier(backbones.get("mobilenet_v2"), base, 16, 3, dropout=0.0)
        index = [layer.name for layer in base.layers].index(fine_tune_from)
        trainable.unfreeze_from(base, index)
        models.append((model, base, index))
    (end_to_end, _, _), (cached, cached_base, index) = models
    start = [w.numpy() for w in cached.weights]
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(start, end_to_end.weights))

    model_lib.compile_classifier(end_to_end, 3, keras.optimizers.SGD(0.1))
    end_to_end.train_on_batch(images, labels)
    bottom, top = activations.split_classifier(cached, cached_base, activations.boundary(cached_base, index))
    stored = bottom.predict(images, verbose=0)
    model_lib.compile_classifier(top, 3, keras.optimizers.SGD(0.1))
    top.train_on_batch(stored, labels)

    # The same variables train, in the same order (the optimizer state is interchangeable on resume).
    assert [v.path for v in top.trainable_variables] == [v.path for v in end_to_end.trainable_variables]
    changed = 0
    for before, after, expected in zip(start, cached.weights, end_to_end.weights):
        np.testing.assert_allclose(after.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6, err_msg=after.path)
        changed += not np.array_equal(before, after.numpy())
    assert changed >= 4  # the top's kernels and the head moved; BatchNorm statistics did not
    bn_c = cached_base.get_layer("bn_c")
    assert np.array_equal(bn_c.moving_mean.numpy(), np.zeros(6)) and np.array_equal(
        bn_c.moving_variance.numpy(), np.ones(6)
    )


@pytest.mark.slow
def test_a_cached_run_ends_where_an_end_to_end_run_does_and_the_memory_budget_falls_back(tmp_path, data_dir):
    """One batch per epoch (the 32 training images) and no dropout: both paths take the same
    steps, so the whole model must end the same. The second run's budget (50 KiB) holds the stored
    features (36 x 32 floats, 7 KiB at their peak of 1.5x) but not the activations (36 x 8x8x16
    floats, 216 KiB at their peak) nor the decoded images (130 KiB at theirs): phase 2 trains end
    to end, reading the decoded store on disk."""
    import os

    from tfpipe.data.pipeline import PipelineConfig
    from tfpipe.training.train import train

    runs = {}
    for name, budget in (("cached", None), ("over_budget", "50KB")):
        logged = []
        config = tiny_train_config(
            tmp_path / name,
            data_dir,
            augment="none",
            dropout=0.0,
            pipeline=PipelineConfig(image_size=32, batch_size=32, seed=1),
            initial_epochs=1,
            fine_tune_epochs=2,
            memory_budget=budget,
        )
        results = train(config, log=logged.append)
        runs[name] = (results, logged, keras.models.load_model(os.path.join(config.model_dir, "final.keras")))
    (cached, cached_log, cached_model), (fallback, fallback_log, fallback_model) = runs["cached"], runs["over_budget"]
    assert cached["cached_fine_tuning"] == "block1_project_bn (8x8x16, float32)"  # the tiny test base's
    below = f"Cached fine-tuning: the frozen layers below {tiny_backbone.FINE_TUNE_AT} run once over 36 images"
    assert any(line.startswith(below) for line in cached_log)
    assert "Cache: none needed: both phases train on stored outputs of the frozen layers" in cached_log
    assert fallback["fast_feature_extraction"] and fallback["cached_fine_tuning"] is None
    assert "Memory budget for data: 50 KiB, --memory_budget=50KB" in fallback_log
    off = "Cached fine-tuning off, this phase trains end to end: the activations at block1_project_bn"
    assert any(line.startswith(off) and "216 KiB at their peak" in line for line in fallback_log), fallback_log
    store_root = os.path.join(data_dir, "tfpipe_store")
    assert any(line.startswith(f"Cache: a decoded store on disk in {store_root}: 36 decoded images") for line in fallback_log)
    assert fallback["cache"] == store_root and os.listdir(store_root)
    for a, b in zip(cached_model.weights, fallback_model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-5, err_msg=a.path)
    assert cached["test_accuracy"] == pytest.approx(fallback["test_accuracy"])
