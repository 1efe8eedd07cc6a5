"""Reads a PyTorch state dict saved in the legacy (pre-zip) format, without torch and
without running anything the file names.

A legacy file is five pickles and raw data, one after another:

    magic number | protocol version (1001) | system info
    | the state dict, whose tensors are torch._utils._rebuild_tensor_v2(storage, offset,
      size, stride, ...) with each storage a persistent id ('storage', type, key, ...)
    | the storage keys, in the order their data follows
    | per storage: its element count (8 bytes, little-endian), then its elements

A pickle can name any Python callable, and unpickling calls it. So the state dict
is read by an Unpickler that resolves only an allow-list of globals, each to a
stand-in here that records what the file says; anything else is refused with
the global's name. Tensors are then cut out of their storages with their offset,
size and stride: weight files ported from TensorFlow hold permuted views (a conv
kernel of size (out, in, kh, kw) laid out as (kh, kw, in, out)), and reading a
storage as if it were row-major scrambles them silently.

The file is read as hostile data (defense in depth: tfpipe reads only a packaged,
sha256-pinned file today):
- every allow-listed global is a fresh object for each lookup, so the pickle's BUILD
  opcode (which sets attributes) can change nothing outside the load it is in;
  storage types are then taken by name from this module's own table;
- a storage's declared size is checked against the bytes left in the file before
  anything is allocated;
- a tensor must fit its storage: its elements no more than the storage holds, its
  last element inside it, and its strides those of a layout that does not overlap
  itself (a zero stride would turn a few bytes into terabytes);
- whatever else is malformed (sizes that are not integers, numbers too large for
  numpy, a header that is not a dict) ends as one TfpipeError line.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
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
    for what, values in (("size", size), ("stride", stride)):
        if not isinstance(values, (tuple, list)) or not all(type(n) is int for n in values):
            raise TfpipeError(f"a tensor's {what} is {values!r:.60}, not a tuple of integers")
    if type(storage_offset) is not int or len(size) != len(stride):
        raise TfpipeError(f"a tensor's offset {storage_offset!r:.40} or its {len(size)} sizes and strides do not match")
    return _TensorView(key, storage_type, storage_offset, tuple(size), tuple(stride))


class _StorageName:
    """What the file names as a storage type: a fresh object per lookup, read back by name only."""

    def __init__(self, name: str):
        self.name = name


def _fresh_ordered_dict():
    # A subclass made for this lookup: a BUILD on it changes only it.
    return type("OrderedDict", (collections.OrderedDict,), {})


def _fresh_rebuild():
    def rebuild(*args):
        return _rebuild_tensor_v2(*args)

    return rebuild


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _fresh_ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _fresh_rebuild,
    **{("torch", name): (lambda name=name: _StorageName(name)) for name in _STORAGE_TYPES},
}


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]()
        except KeyError:
            raise TfpipeError(
                f"refusing to unpickle global {module}.{name}: a weights file may name only "
                f"{', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED_GLOBALS))}"
            ) from None

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count[, view metadata])
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise TfpipeError(f"unexpected persistent id {pid!r:.80} in a weights file")
        named = pid[1]
        # By the name it was looked up under (a BUILD may have set another attribute, never the table).
        storage_type = _STORAGE_TYPES.get(named.name) if type(named) is _StorageName else None
        if storage_type is None or type(pid[2]) not in (str, int):
            raise TfpipeError(f"unexpected storage type {named!r:.80} in a weights file")
        return str(pid[2]), storage_type


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """name -> numpy array (a copy, C-contiguous) for every tensor of a legacy PyTorch state dict.

    TfpipeError for a file that is not one, that names a global outside the
    allow-list, or whose tensors do not fit in their storages.
    """
    try:
        return _read(path)
    except TfpipeError as error:
        raise TfpipeError(" ".join(str(error).split())) from None  # one line, whatever the file held
    except (MemoryError, OverflowError, RecursionError, ValueError, TypeError, struct.error) as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        raise TfpipeError(f"{path} is not a readable PyTorch state dict ({reason})") from None


def _read(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as stream:
        try:
            header = [_StateDictUnpickler(stream).load() for _ in range(3)]
            if header[0] != _MAGIC_NUMBER or header[1] != _PROTOCOL_VERSION:
                raise TfpipeError(f"{path} is not a PyTorch file in the legacy format (magic {header[0]!r:.40})")
            if not isinstance(header[2], dict) or not header[2].get("little_endian", False):
                raise TfpipeError(f"{path} was written on a big-endian machine; tfpipe reads little-endian files")
            state = _StateDictUnpickler(stream).load()
            keys = _StateDictUnpickler(stream).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError) as error:
            raise TfpipeError(f"{path} is not a readable PyTorch state dict: {error!s:.200}") from None
        if not isinstance(state, dict) or not all(isinstance(v, _TensorView) for v in state.values()):
            raise TfpipeError(f"{path} holds no state dict of tensors")
        if not isinstance(keys, list):
            raise TfpipeError(f"{path} lists its storages as {type(keys).__name__}, not a list")
        types = {view.storage_key: view.storage_type for view in state.values()}
        storages = _read_storages(stream, keys, types, path)
    tensors = {}
    for name, view in state.items():
        if view.storage_key not in storages:
            raise TfpipeError(f"{path}: tensor {name} names storage {view.storage_key}, which the file does not hold")
        tensors[str(name)] = _materialize(view, storages[view.storage_key], name, path)
    return tensors


def _read_storages(stream, keys, types: dict[str, _StorageType], path: str) -> dict[str, np.ndarray]:
    size = os.fstat(stream.fileno()).st_size
    storages = {}
    for key in keys:
        key = str(key)
        storage_type = types.get(key)
        raw_count = stream.read(8)
        if storage_type is None or len(raw_count) != 8:
            raise TfpipeError(f"{path}: storage {key} is not where the file says it is")
        (count,) = struct.unpack("<q", raw_count)
        nbytes = count * storage_type.dtype.itemsize
        left = size - stream.tell()
        if count < 0 or nbytes > left:  # refused before anything of that size is allocated
            raise TfpipeError(
                f"{path} is truncated or damaged: storage {key} declares {count} elements ({nbytes} bytes), "
                f"{left} bytes are left in the file"
            )
        if key in storages:
            raise TfpipeError(f"{path}: storage {key} is listed twice")
        storages[key] = np.frombuffer(stream.read(nbytes), dtype=storage_type.dtype)
    return storages


def _materialize(view: _TensorView, storage: np.ndarray, name: str, path: str) -> np.ndarray:
    if any(n < 0 for n in view.size + view.stride) or view.offset < 0:
        raise TfpipeError(f"{path}: tensor {name} has a negative size, stride or offset")
    native = storage.dtype.newbyteorder("=")
    elements = math.prod(view.size)
    if elements > len(storage):
        raise TfpipeError(
            f"{path}: tensor {name} has {elements} elements, more than the {len(storage)} its storage holds"
        )
    if elements == 0:  # an empty tensor reads nothing
        return np.zeros(view.size, native)
    last = view.offset + sum((n - 1) * s for n, s in zip(view.size, view.stride))
    if last >= len(storage):
        raise TfpipeError(f"{path}: tensor {name} reaches past the end of its storage")
    if _overlaps(view.size, view.stride):
        raise TfpipeError(
            f"{path}: tensor {name} has strides {view.stride} for size {view.size}, a layout whose elements "
            "overlap; a weights tensor is laid out without overlap"
        )
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


def _overlaps(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether a strided layout maps two indices to one element. Without overlap, the dimensions
    of more than one element, sorted by stride, each step over all of the ones before it."""
    span = 1  # elements covered by the dimensions taken so far
    for n, s in sorted(((n, s) for n, s in zip(size, stride) if n > 1), key=lambda dimension: dimension[1]):
        if s < span:
            return True
        span = s * n
    return False
