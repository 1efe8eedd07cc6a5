"""Image files with labels, as `folder:` and `csv:` datasets list them, and the
index cache that lets a big folder start without decoding it again.

Both kinds of dataset end as a FileIndex: per split, paths and labels in a fixed,
class-mixed order (a hash of each file's path below the root), so `train[:80%]`
holds every class in proportion, exactly as slicing a (shuffled-on-write) tfds
dataset does.

Files that cannot be decoded are found up front, by decoding every file once
with the decoder the pipeline uses, so an epoch never meets a broken file and
the example counts and steps per epoch are exact. That pass costs seconds per
thousand photos, so its results are kept in an index cache under --data_dir:
one JSON file per root folder, with each file's size, modification time and
whether it decodes. At the next start a file whose size and modification time are
unchanged is not decoded again; a new or touched one is, and removed ones are
dropped: only what changed is decoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from tfpipe import atomic
from tfpipe.errors import TfpipeError

INDEX_CACHE_DIR = "tfpipe_index"  # below --data_dir
_CACHE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class FileIndex:
    root: str  # the folder the files are named relative to
    class_names: tuple[str, ...]
    # split name -> (paths, labels), in the fixed hashed order
    splits: dict[str, tuple[tuple[str, ...], tuple[int, ...]]]
    unreadable: tuple[str, ...]
    # What the files hold, as far as a stat tells: changes when a file is added, removed, touched or
    # relabelled (content_fingerprint). Stores of decoded images are keyed by it.
    fingerprint: str = ""
    encoded_bytes: int = 0  # the splits' files, all together: what a buffer of encoded images holds

    @classmethod
    def of(cls, root, class_names, splits, unreadable, signatures: dict[str, tuple[int, int]]) -> FileIndex:
        """The index of `splits`' files, its fingerprint and size taken from their (size, mtime) `signatures`."""
        sizes = [(signatures.get(path) or _signature(path))[0] for paths, _ in splits.values() for path in paths]
        fingerprint = content_fingerprint(class_names, splits, signatures)
        return cls(root, tuple(class_names), splits, tuple(sorted(unreadable)), fingerprint, sum(sizes))


def content_fingerprint(class_names, splits, signatures: dict[str, tuple[int, int]]) -> str:
    """A hash of every split's files (path, label, size, modification time) and the class names."""
    digest = hashlib.sha1(json.dumps(list(class_names)).encode())
    for name in sorted(splits):
        paths, labels = splits[name]
        digest.update(name.encode())
        for path, label in zip(paths, labels):
            size, mtime = signatures.get(path) or _signature(path)
            digest.update(f"\0{path}\0{label}\0{size}\0{mtime}".encode())
    return digest.hexdigest()


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Any JPEG, PNG, BMP or GIF (first frame) to an (H, W, 3) uint8 tensor."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def mixed_order(entries: list[tuple[str, int]], root: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(path, label) pairs -> (paths, labels) in the fixed order of a hash of each path below `root`."""
    ordered = sorted(entries, key=lambda entry: hashlib.md5(relative(entry[0], root).encode()).hexdigest())
    return tuple(path for path, _ in ordered), tuple(label for _, label in ordered)


def relative(path: str, root: str) -> str:
    """`path` below `root`, as os.path.relpath gives it, without its cost on 100,000 files."""
    prefix = root.rstrip(os.sep) + os.sep
    return path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, root)


def undecodable(paths: list[str], root: str, cache_dir: str | None) -> tuple[set[str], dict[str, tuple[int, int]]]:
    """The paths TensorFlow's decoder rejects, decoding only files the index cache does not know;
    and each path's (size, modification time), read on the way (content_fingerprint takes them).

    cache_dir: where the index cache lives (DATA_DIR/tfpipe_index); None: decode everything.
    """
    started = time.monotonic()
    cache = _IndexCache(cache_dir, root)
    stats = {path: _signature(path) for path in paths}
    known = cache.read()
    verdicts = {path: known[path][2] for path, signature in stats.items() if known.get(path, (None,))[:2] == signature}
    to_decode = [path for path in paths if path not in verdicts]
    decoded = _decodes(to_decode)
    verdicts.update(zip(to_decode, decoded))
    if to_decode or len(known) != len(verdicts):
        cache.write({path: (*stats[path], bool(verdicts[path])) for path in paths})
    logging.info(
        "Indexed %d files in %s in %.1f s: %d decoded, %d known from the index cache %s",
        len(paths),
        root,
        time.monotonic() - started,
        len(to_decode),
        len(paths) - len(to_decode),
        cache.path or "(none)",
    )
    return {path for path in paths if not verdicts[path]}, stats


def _signature(path: str) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_size, status.st_mtime_ns


class _IndexCache:
    """One root folder's decode results on disk; never the reason a run fails."""

    def __init__(self, cache_dir: str | None, root: str):
        self.root = root
        self.path = None
        if cache_dir is not None:
            key = hashlib.sha1(root.encode()).hexdigest()[:16]
            self.path = os.path.join(cache_dir, f"{os.path.basename(root) or 'root'}-{key}.json")

    def read(self) -> dict[str, tuple]:
        """path -> (size, mtime_ns, decodable) as last written; {} when there is no usable cache."""
        if self.path is None or not os.path.isfile(self.path):
            return {}
        try:
            with open(self.path) as f:
                record = json.load(f)
            if record.get("version") != _CACHE_VERSION or record.get("root") != self.root:
                return {}
            prefix = self.root.rstrip(os.sep) + os.sep
            names = [prefix + name for name in record["names"]]
            return dict(zip(names, zip(record["sizes"], record["mtimes_ns"], record["decodable"], strict=True)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:  # ValueError: zip(strict)
            logging.warning("Ignoring the unreadable index cache %s (%s); decoding again.", self.path, error)
            return {}

    def write(self, entries: dict[str, tuple]) -> None:
        if self.path is None:
            return
        # Columns rather than a record per file: about twice as fast to parse at 100,000 files.
        sizes, mtimes, decodable = zip(*entries.values()) if entries else ((), (), ())
        record = {
            "version": _CACHE_VERSION,
            "root": self.root,
            "names": [relative(path, self.root) for path in entries],
            "sizes": sizes,
            "mtimes_ns": mtimes,
            "decodable": decodable,
        }
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with atomic.replacing(self.path) as temporary, open(temporary, "w") as out:
                # dumps, not dump: dump streams through the pure-Python encoder, 5x slower here.
                out.write(json.dumps(record, separators=(",", ":")))
        except (OSError, TfpipeError) as error:  # a read-only data_dir costs the next start time, not this run
            logging.warning("Could not write the index cache %s (%s); the next start decodes again.", self.path, error)


def decoded_by_index(paths: list[str], decode, *, deterministic: bool | None = None) -> tf.data.Dataset:
    """(index into `paths`, decode(file bytes)) for every file that reads and decodes, in
    parallel; a file that fails is dropped, so its index is missing from the stream."""
    path_tensor = tf.constant(paths, tf.string)

    def read_and_decode(index):
        return index, decode(tf.io.read_file(tf.gather(path_tensor, index)))

    return (
        tf.data.Dataset.range(len(paths))
        .map(read_and_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        .ignore_errors()
    )


def _decodes(paths: list[str]) -> np.ndarray:
    """Whether each path decodes, by decoding all of them in parallel."""
    decoded = np.zeros(len(paths), dtype=bool)
    # The shape is returned so that the decode is not pruned away.
    checked = decoded_by_index(paths, lambda encoded: tf.shape(decode_image(encoded)), deterministic=False)
    for indices, _ in checked.batch(1024).as_numpy_iterator():
        decoded[indices] = True
    return decoded
