"""Folding BatchNormalization into convolutions: same outputs, fewer layers, the original untouched."""

import keras
import numpy as np
import pytest

from tfpipe.models import backbones
from tfpipe.models import classifier as model_lib
from tfpipe.models.folding import FoldedInference


def _randomize_statistics(model: keras.Model, seed: int = 0) -> None:
    """Statistics far from a fresh layer's (mean 0, variance 1, gamma 1, beta 0), so that a wrong
    fold shows in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape) if "variance" in w.path or "gamma" in w.path
                               else rng.normal(0, 0.5, w.shape) for w in layer.weights])


def _all_layers(model):
    return model._flatten_layers(include_self=False, recursive=True)  # into nested models and wrappers


def _norms(model) -> int:
    return sum(isinstance(layer, keras.layers.BatchNormalization) for layer in _all_layers(model))


def _small_graph():
    """Every case at once: a Conv2D without and with a bias, a depthwise convolution with a
    channel multiplier, a BatchNormalization without scale or center, a convolution read twice,
    one with an activation, and one whose raw output is also the model's output."""
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.BatchNormalization(name="bn_a")(keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs))
    b = keras.layers.Conv2D(4, 1, use_bias=True)(a)
    b = keras.layers.BatchNormalization(name="bn_b", scale=False, center=False)(b)
    c = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False)(b)
    c = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn_c")(c))
    read_twice = keras.layers.Conv2D(8, 1, use_bias=False)(c)
    d = keras.layers.Add()([keras.layers.BatchNormalization(name="bn_d")(read_twice), read_twice])
    activated = keras.layers.Conv2D(8, 1, activation="relu")(d)
    e = keras.layers.BatchNormalization(name="bn_e")(activated)
    raw = keras.layers.Conv2D(8, 1, use_bias=False)(e)
    f = keras.layers.BatchNormalization(name="bn_f")(raw)
    return keras.Model(inputs, [f, raw])


def test_a_folded_graph_gives_the_same_outputs_with_only_the_foldable_norms_gone():
    keras.utils.set_random_seed(0)
    model = _small_graph()
    _randomize_statistics(model)
    images = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype(np.float32)
    before = [w.numpy().copy() for w in model.weights]
    expected = model(images, training=False)
    folded = FoldedInference(model)
    for got, want in zip(folded(images), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert sorted(folded.folded) == ["bn_a", "bn_b", "bn_c"]  # not: read twice, after an activation, raw output kept
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.weights))  # the original untouched


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_a_backbones_features_inside_a_classifier_match_with_its_norms_folded(name, folded_inferences):
    made = folded_inferences
    keras.utils.set_random_seed(0)
    spec = backbones.get(name)
    classifier = model_lib.build_classifier(spec, spec.build_base(32, None), 32, 3)
    _randomize_statistics(model_lib.base_of(classifier))
    images = np.random.default_rng(2).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    want = model_lib.feature_extractor(classifier)(images, training=False).numpy()
    folded = model_lib.folded_feature_extractor(classifier)
    np.testing.assert_allclose(folded(images), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    base = model_lib.base_of(classifier)
    norms = [layer.name for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 30 and [sorted(folded.folded) for folded in made] == [sorted(norms)]  # the extractor's own


def test_a_nested_model_is_folded_and_layers_that_train_differently_run_in_inference():
    keras.utils.set_random_seed(0)
    inner_input = keras.Input((8, 8, 3))
    convolved = keras.layers.Conv2D(4, 3, use_bias=False)(inner_input)
    inner = keras.Model(inner_input, keras.layers.BatchNormalization()(convolved))
    outer_input = keras.Input((8, 8, 3))
    # Recorded in the graph as training=True: only the walk's own training=False keeps it off.
    outer = keras.Model(outer_input, keras.layers.Dropout(0.9)(inner(outer_input), training=True))
    _randomize_statistics(outer)
    images = np.random.default_rng(3).normal(size=(2, 8, 8, 3)).astype(np.float32)
    folded = FoldedInference(outer)
    assert len(folded.folded) == 1
    np.testing.assert_allclose(folded(images), outer(images, training=False), rtol=1e-4, atol=1e-4)


def test_a_model_without_anything_to_fold_runs_as_it_is():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Dense(3)(inputs)))
    _randomize_statistics(model)
    folded = FoldedInference(model)
    x = np.ones((2, 4), np.float32)
    assert folded.folded == [] and np.allclose(folded(x), model(x, training=False))


def test_under_mixed_precision_a_folded_pair_computes_and_gives_out_the_layers_dtypes():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = _small_graph()
        inputs = keras.Input((8, 8, 3))  # a folded pair's output is the model's: nothing after it recasts
        ends_folded = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3)(inputs)))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    images = np.random.default_rng(5).normal(size=(2, 8, 8, 3)).astype(np.float32)
    for graph, folds in ((model, ["bn_a", "bn_b", "bn_c"]), (ends_folded, ["bn"])):
        _randomize_statistics(graph)
        expected = keras.tree.flatten(graph(images, training=False))
        folded = FoldedInference(graph)
        assert sorted(folded.folded) == folds
        for got, plain in zip(keras.tree.flatten(folded(images)), expected):
            assert got.dtype == plain.dtype == "float16"
            np.testing.assert_allclose(np.float32(got), np.float32(plain), rtol=0.05, atol=0.05)


def test_a_subclassed_convolution_is_left_as_it_is():
    class DoubledConv(keras.layers.Conv2D):  # computes its output another way than Conv2D
        def call(self, inputs):
            return super().call(inputs) * 2.0

    inputs = keras.Input((6, 6, 3))
    convolved = DoubledConv(4, 3, use_bias=False)(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization()(convolved))
    _randomize_statistics(model)
    images = np.ones((1, 6, 6, 3), np.float32)
    folded = FoldedInference(model)
    assert folded.folded == []
    np.testing.assert_allclose(folded(images), model(images, training=False), rtol=1e-5)


def test_a_model_with_its_own_call_runs_as_it_is():
    class Doubled(keras.Model):  # Functional, but its call is not what its graph computes
        def call(self, inputs, training=None):
            return super().call(inputs, training=training) * 2.0

    inputs = keras.Input((6, 6, 3))
    model = Doubled(inputs, keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3, use_bias=False)(inputs)))
    _randomize_statistics(model)
    images = np.ones((1, 6, 6, 3), np.float32)
    folded = FoldedInference(model)
    assert folded.folded == []
    np.testing.assert_allclose(folded(images), model(images, training=False), rtol=1e-5)
