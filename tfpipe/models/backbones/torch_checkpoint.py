"""Reads a PyTorch state dict saved in the legacy (pre-zip) format, without torch and
without running anything the file names.

A legacy file is five pickles and raw data, one after another:

    magic number | protocol version (1001) | system info
    | the state dict, whose tensors are torch._utils._rebuild_tensor_v2(storage, offset,
      size, stride, ...) with each storage a persistent id ('storage', type, key, ...)
    | the storage keys, in the order their data follows
    | per storage: its element count (8 bytes, little-endian), then its elements

A pickle can name any Python callable, and unpickling calls it. So the state dict
is read by an Unpickler that resolves only an allow-list of four globals, each to
a stand-in here that records what the file says; anything else is refused with
the global's name. Tensors are then cut out of their storages with their offset,
size and stride: weight files ported from TensorFlow hold permuted views (a conv
kernel of size (out, in, kh, kw) laid out as (kh, kw, in, out)), and reading a
storage as if it were row-major scrambles them silently.
"""

from __future__ import annotations

import collections
import dataclasses
import pickle
import struct

import numpy as np

from tfpipe.errors import TfpipeError

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype


_STORAGE_TYPES = {
    name: _StorageType(name, np.dtype(dtype).newbyteorder("<"))
    for name, dtype in (
        ("FloatStorage", np.float32),
        ("DoubleStorage", np.float64),
        ("HalfStorage", np.float16),
        ("LongStorage", np.int64),
        ("IntStorage", np.int32),
    )
}


@dataclasses.dataclass(frozen=True)
class _TensorView:
    """What the file says a tensor is: a view into a storage."""

    storage_key: str
    storage_type: _StorageType
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    key, storage_type = storage
    return _TensorView(key, storage_type, int(storage_offset), tuple(size), tuple(stride))


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise TfpipeError(
                f"refusing to unpickle global {module}.{name}: a weights file may name only "
                f"{', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS))}"
            ) from None

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count[, view metadata])
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise TfpipeError(f"unexpected persistent id {pid!r:.80} in a weights file")
        storage_type = pid[1]
        if not isinstance(storage_type, _StorageType):
            raise TfpipeError(f"unexpected storage type {storage_type!r:.80} in a weights file")
        return str(pid[2]), storage_type


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """name -> numpy array (a copy, C-contiguous) for every tensor of a legacy PyTorch state dict.

    TfpipeError for a file that is not one, that names a global outside the
    allow-list, or whose tensors do not fit in their storages.
    """
    with open(path, "rb") as stream:
        try:
            header = [_StateDictUnpickler(stream).load() for _ in range(3)]
            if header[0] != _MAGIC_NUMBER or header[1] != _PROTOCOL_VERSION:
                raise TfpipeError(f"{path} is not a PyTorch file in the legacy format (magic {header[0]!r:.40})")
            if not header[2].get("little_endian", False):
                raise TfpipeError(f"{path} was written on a big-endian machine; tfpipe reads little-endian files")
            state = _StateDictUnpickler(stream).load()
            keys = _StateDictUnpickler(stream).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as error:
            raise TfpipeError(f"{path} is not a readable PyTorch state dict: {error}") from None
        if not isinstance(state, dict) or not all(isinstance(v, _TensorView) for v in state.values()):
            raise TfpipeError(f"{path} holds no state dict of tensors")
        types = {view.storage_key: view.storage_type for view in state.values()}
        storages = _read_storages(stream, keys, types, path)
    tensors = {}
    for name, view in state.items():
        if view.storage_key not in storages:
            raise TfpipeError(f"{path}: tensor {name} names storage {view.storage_key}, which the file does not hold")
        tensors[name] = _materialize(view, storages[view.storage_key], name, path)
    return tensors


def _read_storages(stream, keys, types: dict[str, _StorageType], path: str) -> dict[str, np.ndarray]:
    storages = {}
    for key in keys:
        key = str(key)
        storage_type = types.get(key)
        raw_count = stream.read(8)
        if storage_type is None or len(raw_count) != 8:
            raise TfpipeError(f"{path}: storage {key} is not where the file says it is")
        (count,) = struct.unpack("<q", raw_count)
        nbytes = count * storage_type.dtype.itemsize
        raw = stream.read(nbytes)
        if count < 0 or len(raw) != nbytes:
            raise TfpipeError(f"{path} is truncated: storage {key} needs {nbytes} bytes")
        storages[key] = np.frombuffer(raw, dtype=storage_type.dtype)
    return storages


def _materialize(view: _TensorView, storage: np.ndarray, name: str, path: str) -> np.ndarray:
    if any(n < 0 for n in view.size + view.stride) or view.offset < 0:
        raise TfpipeError(f"{path}: tensor {name} has a negative size, stride or offset")
    native = storage.dtype.newbyteorder("=")
    if 0 in view.size:  # an empty tensor reads nothing
        return np.zeros(view.size, native)
    last = view.offset + sum((n - 1) * s for n, s in zip(view.size, view.stride))
    if last >= len(storage):
        raise TfpipeError(f"{path}: tensor {name} reaches past the end of its storage")
    if not view.size:  # a scalar (as_strided would take shape=() as "the storage's shape")
        return np.array(storage[view.offset], dtype=native)
    itemsize = storage.dtype.itemsize
    strided = np.lib.stride_tricks.as_strided(
        storage[view.offset :],
        shape=view.size,
        strides=tuple(s * itemsize for s in view.stride),
        writeable=False,
    )
    return np.ascontiguousarray(strided).astype(native)
