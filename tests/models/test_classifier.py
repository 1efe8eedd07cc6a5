"""Backbones, the classifier, its train_step, and the fine-tune boundary."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import tiny_backbone

import tfpipe  # noqa: F401  (registers the custom objects for load_model)
from tfpipe.errors import TfpipeError
from tfpipe.models import backbones, trainable
from tfpipe.models import classifier as model_lib
from tfpipe.training import finetune

SIZE = 32


def _classifier(num_classes=2, seed=1, dropout=0.2, alpha=0.35, backbone="mobilenet_v2", weights=None):
    keras.utils.set_random_seed(seed)
    spec = backbones.get(backbone)
    base = spec.build_base(SIZE, weights, alpha=alpha)
    return model_lib.build_classifier(spec, base, SIZE, num_classes, dropout=dropout, seed=seed), base


def _data(count=32, num_classes=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (count, SIZE, SIZE, 3), dtype=np.uint8)
    return tf.data.Dataset.from_tensor_slices((images, rng.integers(0, num_classes, count))).batch(8)


def _compile(model, num_classes=2, learning_rate=1e-3):
    model_lib.compile_classifier(model, num_classes, model_lib.make_optimizer("rmsprop", learning_rate))


def test_mobilenet_v2_at_fine_tune_at_100_trains_2_then_56_variables():
    classifier, base = _classifier(alpha=1.0)
    assert len(base.layers) == 154
    trainable.freeze(base)
    assert len(classifier.trainable_variables) == 2
    trainable.unfreeze_from(base, trainable.resolve_fine_tune_at(base, "100"))
    assert len(classifier.trainable_variables) == 56
    trainable.unfreeze_from(base, 0)
    assert len(classifier.trainable_variables) == len(base.trainable_variables) + 2


def test_fine_tune_at_takes_a_layer_name():
    _, base = _classifier()
    assert trainable.resolve_fine_tune_at(base, "block_11_expand") == [layer.name for layer in base.layers].index(
        "block_11_expand"
    )


@pytest.mark.parametrize(
    "value, message", [("154", "has 154 layers"), ("-1", "out of range"), ("no_such_layer", "154 layers")]
)
def test_fine_tune_at_out_of_range_or_unknown_states_the_layer_count(value, message):
    _, base = _classifier()
    with pytest.raises(TfpipeError, match=message):
        trainable.resolve_fine_tune_at(base, value)


def test_vgg16_fine_tune_at_100_is_an_error_not_a_silent_full_freeze():
    base = backbones.get("vgg16").build_base(SIZE, None)
    with pytest.raises(TfpipeError, match="has 19 layers"):
        trainable.resolve_fine_tune_at(base, 100)


def test_batchnorm_statistics_do_not_change_while_fine_tuning():
    classifier, base = _classifier()
    trainable.unfreeze_from(base, 100)
    _compile(classifier)
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    trainable_norms = [layer for layer in norms if layer.trainable]
    assert trainable_norms, "fine-tuning from 100 must include BatchNorm layers"
    before = [(n.moving_mean.numpy().copy(), n.moving_variance.numpy().copy(), n.gamma.numpy().copy()) for n in norms]
    classifier.fit(_data(), epochs=1, verbose=0)
    for layer, (mean, variance, gamma) in zip(norms, before):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
        np.testing.assert_array_equal(layer.moving_variance.numpy(), variance)
    changed_gamma = [
        not np.array_equal(n.gamma.numpy(), b[2]) for n, b in zip(trainable_norms, before[-len(trainable_norms) :])
    ]
    assert any(changed_gamma), "the trainable BatchNorm layers' gamma should still learn"


@pytest.mark.parametrize("num_classes", [2, 3])
def test_custom_train_step_matches_keras_builtin_step(num_classes):
    weights = {}
    for builtin in (True, False):
        # The step, not the base, is under test: the tiny test base traces in a second, MobileNetV2 in ten.
        classifier, base = _classifier(num_classes=num_classes, seed=7, backbone=tiny_backbone.NAME, alpha=1.0)
        trainable.unfreeze_from(base, tiny_backbone.FINE_TUNE_AT)
        model = keras.Model(classifier.input, classifier.output) if builtin else classifier
        assert isinstance(model, model_lib.TransferClassifier) != builtin
        _compile(model, num_classes)
        history = model.fit(_data(num_classes=num_classes), epochs=2, verbose=0)
        weights[builtin] = ([w.numpy() for w in model.weights], history.history)
    for builtin_weight, custom_weight in zip(weights[True][0], weights[False][0]):
        np.testing.assert_allclose(custom_weight, builtin_weight, rtol=1e-5, atol=1e-6)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(weights[False][1][key], weights[True][1][key], rtol=1e-5)


def test_test_step_matches_keras_evaluate():
    classifier, _ = _classifier(num_classes=3)
    builtin = keras.Model(classifier.input, classifier.output)
    _compile(classifier, 3)
    _compile(builtin, 3)
    ours = classifier.evaluate(_data(num_classes=3), verbose=0, return_dict=True)
    theirs = builtin.evaluate(_data(num_classes=3), verbose=0, return_dict=True)
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_two_classes_use_one_logit_and_more_use_one_per_class():
    assert _classifier(num_classes=2)[0].output.shape[-1] == 1
    assert _classifier(num_classes=5)[0].output.shape[-1] == 5
    binary_loss, _ = model_lib.loss_and_metrics(2)
    assert isinstance(binary_loss, keras.losses.BinaryCrossentropy)


@pytest.mark.parametrize(
    "backbone, alpha, jit_compile", [("mobilenet_v2", 0.35, False), ("efficientnet_lite0", 1.0, True)]
)
def test_mixed_precision_training_step_runs_with_loss_scaling(backbone, alpha, jit_compile):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        classifier, base = _classifier(backbone=backbone, alpha=alpha)
        trainable.unfreeze_from(base, 100)
        optimizer = model_lib.make_optimizer("rmsprop", 1e-3)
        model_lib.compile_classifier(classifier, 2, optimizer, jit_compile=jit_compile)  # XLA on CPU too
        assert isinstance(classifier.optimizer, keras.optimizers.LossScaleOptimizer)
        history = classifier.fit(_data(), epochs=1, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    assert np.isfinite(history.history["loss"][0])
    assert classifier.output.dtype == "float32"


@pytest.mark.parametrize("suffix", [".h5", ".weights.h5"])
def test_weights_from_a_file_the_test_saves(tmp_path, suffix):
    """.h5 is the legacy format of Keras' official no-top files, loaded by topology;
    .weights.h5 is Keras 3's own."""
    source, _ = _classifier(seed=3)
    saved_base = model_lib.base_of(source)
    path = str(tmp_path / f"mobilenet_v2_0.35_no_top{suffix}")
    if suffix == ".h5":
        saved_base.save(path)  # legacy HDF5, like the files keras.applications downloads
    else:
        saved_base.save_weights(path)
    keras.utils.set_random_seed(99)  # a different initialization, then overwritten by the file
    loaded = backbones.get("mobilenet_v2").build_base(SIZE, path, alpha=0.35)
    for expected, actual in zip(saved_base.weights, loaded.weights):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # Keras' own, on the way to the error
def test_a_weights_file_of_another_width_is_a_clear_error(tmp_path):
    _, base = _classifier(alpha=0.35)
    path = str(tmp_path / "narrow.weights.h5")
    base.save_weights(path)
    with pytest.raises(TfpipeError, match="does not fit mobilenet_v2 with alpha=1.0"):
        backbones.get("mobilenet_v2").build_base(SIZE, path, alpha=1.0)


def test_imagenet_weights_offline_fail_in_seconds_with_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights file
    with pytest.raises(TfpipeError, match="--weights=PATH"):
        backbones.get("mobilenet_v2").build_base(SIZE, "imagenet", alpha=0.35)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_b0", "vgg16", "resnet50"])
def test_image_size_too_small_for_the_backbone(backbone):
    with pytest.raises(TfpipeError, match="too small"):
        backbones.get(backbone).build_base(16, None)


@pytest.mark.parametrize(
    "backbone, application",
    [
        ("mobilenet_v2", lambda: keras.applications.MobileNetV2(weights=None, alpha=0.35)),
        ("efficientnet_b0", lambda: keras.applications.EfficientNetB0(weights=None)),
    ],
)
def test_a_keras_application_native_size_is_its_keras_default_input(backbone, application):
    # The size Keras builds it at, with its top, when given none: its ImageNet weights' size.
    assert backbones.get(backbone).native_size == application().input_shape[1] == 224


def test_the_image_size_is_the_bases_own_unless_given():
    from tfpipe.data.pipeline import PipelineConfig
    from tfpipe.training.config import TrainConfig

    default = TrainConfig(model_dir="")
    assert default.backbone == "efficientnet_lite0" and default.pipeline.image_size is None
    assert default.image_size == 224 and default.resolved().pipeline.image_size == 224
    assert default.image_size_line() == (
        "Image size: 224 px, the size efficientnet_lite0's ImageNet weights were trained at "
        "(--image_size sets another)"
    )
    given = TrainConfig(model_dir="", pipeline=PipelineConfig(image_size=160))
    assert given.image_size == 160 and given.resolved() == given
    assert given.image_size_line() == "Image size: 160 px (--image_size; efficientnet_lite0's own is 224)"
    # A run resumes whether its size was left to the base or given as the same number.
    explicit = TrainConfig(model_dir="", pipeline=PipelineConfig(image_size=224))
    assert default.resolved().fingerprint() == explicit.fingerprint()


def test_alpha_is_checked():
    with pytest.raises(TfpipeError, match="not a MobileNetV2 width"):
        backbones.get("mobilenet_v2").check(SIZE, 0.6)
    with pytest.raises(TfpipeError, match="mobilenet_v2 only"):
        backbones.get("vgg16").check(SIZE, 0.5)


def test_caffe_scaling_is_keras_preprocess_input():
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = keras.applications.vgg16.preprocess_input(images.copy())
    np.testing.assert_allclose(backbones.CaffeScaling()(images), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "vgg16", "resnet50"])
def test_every_backbone_builds_a_classifier(backbone):
    classifier, base = _classifier(backbone=backbone, alpha=1.0)
    assert classifier(np.zeros((1, SIZE, SIZE, 3), np.uint8)).shape == (1, 1)
    trainable.freeze(base)
    assert len(classifier.trainable_variables) == 2


def test_saved_classifier_loads_after_import_tfpipe(tmp_path):
    classifier, _ = _classifier()
    _compile(classifier)
    path = str(tmp_path / "model.keras")
    classifier.save(path)
    loaded = keras.models.load_model(path)
    images = np.random.default_rng(0).integers(0, 255, (2, SIZE, SIZE, 3), dtype=np.uint8)
    assert isinstance(loaded, model_lib.TransferClassifier)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), classifier.predict(images, verbose=0), rtol=1e-5)


def test_batchnorm_calibration_of_a_random_base_gives_usable_features():
    classifier, base = _classifier()
    images = np.random.default_rng(0).integers(0, 255, (16, SIZE, SIZE, 3), dtype=np.uint8)
    extractor = model_lib.feature_extractor(classifier)
    before = extractor(images, training=False).numpy()
    used = finetune.calibrate_batchnorm(classifier, base, [images[:8], images[8:]])
    after = extractor(images, training=False).numpy()
    assert used == 16
    assert np.abs(before).max() < 1e-3 < after.std()
