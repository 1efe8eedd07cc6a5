"""The legacy PyTorch weight reader against crafted, hostile files: each is one TfpipeError line,
never a MemoryError, an OverflowError or a raw ValueError, and none changes the reader itself."""

import collections
import pickle
import struct

import numpy as np
import pytest

from tfpipe.errors import TfpipeError
from tfpipe.models.backbones import torch_checkpoint

_HEADER = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()  # GLOBAL


def _body(obj) -> bytes:
    """A pickled object without its PROTO and STOP, to splice after other opcodes."""
    data = pickle.dumps(obj, protocol=2)
    assert data[:2] == b"\x80\x02" and data[-1:] == b"."
    return data[2:-1]


def _tensor(key: str, storage: str, offset, size, stride) -> bytes:
    """_rebuild_tensor_v2(('storage', torch.<storage>, key, 'cpu', n), offset, size, stride, False, OrderedDict())"""
    pid = b"(" + _body("storage") + _global("torch", storage) + _body(key) + _body("cpu") + _body(0) + b"t"
    args = b"(" + pid + b"Q" + _body(offset) + _body(size) + _body(stride) + b"\x89" + _global(
        "collections", "OrderedDict"
    ) + b")R" + b"t"
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"  # REDUCE


def _state(tensors: dict, prefix: bytes = b"") -> bytes:
    """A pickle of {name: tensor opcodes}, after `prefix` opcodes."""
    items = b"".join(_body(name) + opcodes for name, opcodes in tensors.items())
    return b"\x80\x02" + prefix + b"}(" + items + b"u."


def _file(path, state: bytes, storages: list[tuple[str, bytes]], header: bytes = _HEADER, keys=None) -> str:
    """A legacy file: header, the state pickle, the storage keys, then each storage's count and bytes."""
    keys = pickle.dumps([key for key, _ in storages] if keys is None else keys, protocol=2)
    data = b"".join(raw for _, raw in storages)
    path.write_bytes(header + state + keys + data)
    return str(path)


def _floats(values) -> bytes:
    values = np.asarray(values, "<f4")
    return struct.pack("<q", len(values)) + values.tobytes()


def _good(path) -> str:
    return _file(path, _state({"w": _tensor("0", "FloatStorage", 0, (2, 3), (1, 2))}), [("0", _floats(range(6)))])


def _read_good(tmp_path):
    state = torch_checkpoint.read_state_dict(_good(tmp_path / "good.pth"))
    np.testing.assert_array_equal(state["w"], [[0, 2, 4], [1, 3, 5]])
    assert state["w"].dtype == np.float32


def _refused(path, message: str):
    with pytest.raises(TfpipeError, match=message) as error:
        torch_checkpoint.read_state_dict(path)
    assert "\n" not in str(error.value)


def test_a_well_formed_crafted_file_reads(tmp_path):
    _read_good(tmp_path)


@pytest.mark.parametrize(
    "module, name, state",
    [
        ("torch", "FloatStorage", {"name": "DoubleStorage", "dtype": "float64"}),  # a storage type's dict
        ("torch", "FloatStorage", (None, {"name": "LongStorage"})),  # ... and its attributes
        ("collections", "OrderedDict", (None, {"popitem": None})),  # a class's attributes
        ("torch._utils", "_rebuild_tensor_v2", (None, {"__defaults__": (1, 2)})),  # a function's defaults
        ("torch._utils", "_rebuild_tensor_v2", {"__kwdefaults__": {}}),
    ],
)
def test_build_on_an_allowed_global_changes_nothing_outside_its_own_load(tmp_path, module, name, state):
    # GLOBAL; state; BUILD; POP, then an ordinary state dict.
    attack = _global(module, name) + _body(state) + b"b0"
    path = _file(tmp_path / "build.pth", _state({"w": _tensor("0", "FloatStorage", 0, (3,), (1,))}, attack), [])
    try:
        torch_checkpoint.read_state_dict(path)
    except TfpipeError as error:
        assert "\n" not in str(error)
    assert collections.OrderedDict.popitem is not None
    assert torch_checkpoint._rebuild_tensor_v2.__defaults__ == (False, None)
    assert torch_checkpoint._STORAGE_TYPES["FloatStorage"].dtype == np.dtype("<f4")
    _read_good(tmp_path)  # the next file reads as before


def test_zero_strides_cannot_make_terabytes_of_a_few_bytes(tmp_path):
    state = _state({"w": _tensor("0", "FloatStorage", 0, (10**6, 10**6), (0, 0))})
    _refused(_file(tmp_path / "zero.pth", state, [("0", _floats([1.0]))]), "more than the 1 its storage holds")


def test_overlapping_strides_are_refused(tmp_path):
    state = _state({"w": _tensor("0", "FloatStorage", 0, (3, 3), (1, 1))})
    _refused(_file(tmp_path / "overlap.pth", state, [("0", _floats(range(9)))]), "overlap")


def test_a_storage_larger_than_the_file_is_refused_before_reading(tmp_path):
    state = _state({"w": _tensor("0", "FloatStorage", 0, (3,), (1,))})
    huge = struct.pack("<q", 2**40) + np.zeros(3, "<f4").tobytes()
    _refused(_file(tmp_path / "huge.pth", state, [("0", huge)]), "declares 1099511627776 elements")


def test_a_negative_storage_count_is_refused(tmp_path):
    state = _state({"w": _tensor("0", "FloatStorage", 0, (3,), (1,))})
    _refused(_file(tmp_path / "negative.pth", state, [("0", struct.pack("<q", -5))]), "declares -5 elements")


def test_an_offset_beyond_any_array_is_refused(tmp_path):
    state = _state({"w": _tensor("0", "FloatStorage", 2**70, (3,), (1,))})
    _refused(_file(tmp_path / "offset.pth", state, [("0", _floats(range(3)))]), "reaches past the end")


@pytest.mark.parametrize("size, stride", [((2.5,), (1,)), (("3",), (1,)), ((3,), (1, 1)), (3, 1)])
def test_sizes_and_strides_must_be_tuples_of_integers_that_match(tmp_path, size, stride):
    state = _state({"w": _tensor("0", "FloatStorage", 0, size, stride)})
    _refused(_file(tmp_path / "sizes.pth", state, [("0", _floats(range(3)))]), "not a tuple of integers|do not match")


def test_sizes_too_large_for_numpy_are_one_line(tmp_path):
    state = _state({"w": _tensor("0", "FloatStorage", 0, (2**63, 2**63), (1, 1))})
    _refused(_file(tmp_path / "overflow.pth", state, [("0", _floats(range(3)))]), "more than the 3 its storage")


def test_a_header_that_is_not_a_dict_is_refused(tmp_path):
    header = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, ["little_endian"]))
    state = _state({"w": _tensor("0", "FloatStorage", 0, (3,), (1,))})
    _refused(_file(tmp_path / "header.pth", state, [("0", _floats(range(3)))], header=header), "big-endian")


def test_storage_keys_that_are_not_a_list_or_repeat_are_refused(tmp_path):
    state = _state({"w": _tensor("0", "FloatStorage", 0, (3,), (1,))})
    _refused(_file(tmp_path / "keys.pth", state, [("0", _floats(range(3)))], keys=7), "not a list")
    storages = [("0", _floats(range(3))), ("0", _floats(range(3)))]
    _refused(_file(tmp_path / "twice.pth", state, storages), "listed twice")


def test_an_unknown_storage_type_or_persistent_id_is_refused(tmp_path):
    state = _state({"w": _tensor("0", "ByteStorage", 0, (3,), (1,))})
    _refused(_file(tmp_path / "byte.pth", state, [("0", _floats(range(3)))]), "refusing to unpickle global torch.Byte")
    bad_pid = b"\x80\x02}(" + _body("w") + _body(("tensor", 1)) + b"Q" + b"u."
    _refused(_file(tmp_path / "pid.pth", bad_pid, []), "unexpected persistent id")
