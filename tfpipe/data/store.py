"""The decoded store: a split's images decoded and resized to uint8 at the run's size, written
to disk once and read by every later epoch and every later run on the same data.

    STORE_ROOT/<source>_<split>_<size>px_<key>/
        images-00000.bin ...    fixed-size records: image i of a shard at offset i x S x S x 3
        labels.npy              int64, one per image
        manifest.json           written last: a folder without one is not a store

For splits that do not fit the memory budget (tfpipe.memory). Why this format (measured against
ArrayRecord, Dataset.save/load, TFRecord and tf.data's file cache in BUILD_NOTES.md, "Its
format"): every image has the same size, so image i sits at a known offset and a batch is read by
its indices, with no index file and no record framing, and the reader holds nothing but the
batch it reads. The order of an epoch is then a permutation of indices (8 bytes an image) drawn
afresh every epoch: a global shuffle over the whole split with no shuffle buffer of images, as
the memory cache (ArrayCache) shuffles its indices. tf.data's file cache and Dataset.save/load
read in write order and need a buffer of decoded images to shuffle.

Key (StoreKey): everything that changes the store's contents: the source's fingerprint (its
files, their sizes and modification times, its labels), the split, the image size, the decode
options and the shard. A changed folder or CSV gets a new store, never the old one. A store is
written into a temporary folder that takes its final name only when complete, so a run killed
while writing leaves nothing a later run trusts; the next writer removes the leftover.

Paths go through tf.io.gfile, so a bucket path should work where TensorFlow's file systems do
(gs://, s3:// with tensorflow-io); only local folders are tested here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import socket
import threading
import time

import numpy as np
import tensorflow as tf

from tfpipe.errors import TfpipeError

MANIFEST = "manifest.json"
LABELS = "labels.npy"
STORE_DIR = "tfpipe_store"  # below --data_dir, for --cache=auto
_FORMAT = 1
# Images per shard file: about 1.5 GB at 224 px. Shards keep every file under common size
# limits and let a bucket store be written and read in parts.
SHARD_IMAGES = 10_000
_TEMPORARY = ".tmp-"
_WRITE_BATCH = 64
WRITING = "Decoded store: writing"  # how the line announcing a write starts


@dataclasses.dataclass(frozen=True)
class StoreKey:
    """What decides a store's contents; its hash names the store's folder."""

    source_name: str
    source_fingerprint: str
    split: str
    image_size: int
    decode: str  # decode and resize options, e.g. "jpeg_dct_scaling=True,resize=bilinear"
    shard: tuple[int, int] | None = None
    max_examples: int | None = None

    def folder_name(self) -> str:
        record = json.dumps(dataclasses.asdict(self), sort_keys=True)
        readable = "".join(c if c.isalnum() else "_" for c in f"{self.source_name}_{self.split}")[-60:]
        return f"{readable}_{self.image_size}px_{hashlib.sha1(record.encode()).hexdigest()[:12]}"


@dataclasses.dataclass(frozen=True)
class DecodedStore:
    """A complete store on disk, read by index: indices() -> shuffle and batch -> gather()."""

    path: str
    image_size: int
    labels: np.ndarray  # int64 [count]
    shard_images: int

    @property
    def count(self) -> int:
        return len(self.labels)

    @property
    def image_bytes(self) -> int:
        return self.image_size * self.image_size * 3

    def indices(self, examples: tf.data.Dataset | None = None) -> tf.data.Dataset:
        """The stored examples' indices (ArrayCache's interface; `examples` is already stored)."""
        del examples
        return tf.data.Dataset.range(self.count)

    def gather(self, indices: tf.Tensor):
        """(uint8 images [B, S, S, 3], labels [B]) of a batch of indices, in their order."""
        size = self.image_size
        images = tf.numpy_function(self._read, [indices], tf.uint8, stateful=False)
        images.set_shape([indices.shape[0], size, size, 3])
        return images, self.label_of(indices)

    def label_of(self, indices: tf.Tensor) -> tf.Tensor:
        """The labels of the examples at `indices`, read from memory: no image is touched."""
        return tf.gather(tf.constant(self.labels), indices)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty((len(indices), self.image_size, self.image_size, 3), np.uint8)
        record = self.image_bytes
        # In file order, so that neighbours in a shard are read one after the other.
        for position in np.argsort(indices, kind="stable"):
            shard, offset = divmod(int(indices[position]), self.shard_images)
            reader = _reader(os.path.join(self.path, _shard_name(shard)))
            reader.seek(offset * record)
            out[position] = np.frombuffer(reader.read(record), np.uint8).reshape(out.shape[1:])
        return out


def _shard_name(index: int) -> str:
    return f"images-{index:05d}.bin"


_READERS: dict = {}


def _reader(path: str):
    """One open file per shard and thread: tf.data runs numpy_function calls on several threads."""
    key = (path, threading.get_ident())
    reader = _READERS.get(key)
    if reader is None:
        reader = _READERS[key] = tf.io.gfile.GFile(path, "rb")
    return reader


def open_store(root: str, key: StoreKey) -> DecodedStore | None:
    """The complete store for `key` under `root`, or None when there is none yet."""
    path = os.path.join(root, key.folder_name())
    try:
        with tf.io.gfile.GFile(os.path.join(path, MANIFEST)) as f:
            manifest = json.load(f)
        with tf.io.gfile.GFile(os.path.join(path, LABELS), "rb") as f:
            labels = np.load(io.BytesIO(f.read()))
    except (OSError, ValueError, tf.errors.OpError):
        return None
    if manifest.get("format") != _FORMAT or manifest.get("key") != json.loads(json.dumps(dataclasses.asdict(key))):
        return None
    if len(labels) != manifest.get("count"):
        return None
    return DecodedStore(path, key.image_size, labels, manifest["shard_images"])


def open_or_write(root: str, key: StoreKey, examples: tf.data.Dataset, expected: int, log) -> DecodedStore:
    """The store for `key` under `root`, written first from (uint8 image, label) `examples` if
    there is none; `expected`: how many examples the source counts."""
    found = open_store(root, key)
    if found is not None:
        log(f"Decoded store: reading {found.count} images of {key.split} from {found.path}")
        return found
    return _write(root, key, examples, expected, log)


def _write(root: str, key: StoreKey, examples: tf.data.Dataset, expected: int, log) -> DecodedStore:
    final = os.path.join(root, key.folder_name())
    _remove_leftovers(root, key.folder_name())
    temporary = os.path.join(root, f"{_TEMPORARY}{socket.gethostname()}-{os.getpid()}-{key.folder_name()}")
    record = key.image_size * key.image_size * 3
    log(
        f"{WRITING} {expected} images of {key.split} ({expected * record / 2**20:,.0f} MiB) "
        f"to {final}, once for this data and size"
    )
    started = time.monotonic()
    labels: list[int] = []
    out = None
    try:
        tf.io.gfile.makedirs(temporary)
        for images, batch_labels in examples.batch(_WRITE_BATCH).as_numpy_iterator():
            for image in images:
                if len(labels) % SHARD_IMAGES == 0:
                    if out is not None:
                        out.close()
                    out = tf.io.gfile.GFile(os.path.join(temporary, _shard_name(len(labels) // SHARD_IMAGES)), "wb")
                out.write(image.tobytes())
                labels.append(-1)
            labels[len(labels) - len(batch_labels) :] = batch_labels.tolist()
        if out is not None:
            out.close()
        if len(labels) != expected:
            raise TfpipeError(
                f"the decoded store of {key.split} got {len(labels)} images where the source counts {expected}; "
                "the data changed while it was read: run again"
            )
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(labels, np.int64))
        with tf.io.gfile.GFile(os.path.join(temporary, LABELS), "wb") as f:
            f.write(buffer.getvalue())
        manifest = {
            "format": _FORMAT,
            "key": dataclasses.asdict(key),
            "count": len(labels),
            "shard_images": SHARD_IMAGES,
            "record_bytes": record,
        }
        with tf.io.gfile.GFile(os.path.join(temporary, MANIFEST), "w") as f:
            f.write(json.dumps(manifest, indent=1))
        _remove(final)  # a store this run did not trust (a key written again after a change of format)
        tf.io.gfile.rename(temporary, final)
    except BaseException as error:
        if out is not None:
            out.close()
        _remove(temporary)
        if isinstance(error, (OSError, tf.errors.OpError)):
            raise TfpipeError(
                f"could not write the decoded store to {final} ({error}); free space there, choose another "
                "folder with --cache=DIR, or pass --cache=none"
            ) from None
        raise
    seconds = time.monotonic() - started
    log(f"Decoded store: {len(labels)} images written in {seconds:.0f} s ({len(labels) / max(seconds, 1e-9):,.0f}/s)")
    return open_store(root, key)


def _remove_leftovers(root: str, name: str) -> None:
    """Temporary folders of this store left by writers on this machine that are no longer running."""
    if not tf.io.gfile.isdir(root):
        return
    prefix = f"{_TEMPORARY}{socket.gethostname()}-"
    for entry in tf.io.gfile.listdir(root):
        entry = entry.rstrip("/")
        if not (entry.startswith(prefix) and entry.endswith(f"-{name}")):
            continue
        pid = entry[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(os.path.join(root, entry))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: str) -> None:
    try:
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)
    except (OSError, tf.errors.OpError):
        pass
