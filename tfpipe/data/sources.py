"""Dataset specs -> sources of encoded images and labels, with their metadata.

A spec is one of:
  tfpipe_shapes[/CONFIG]     the embedded dataset (default), drawn locally, no network
  NAME[/CONFIG][:VERSION]    any tfds image-classification dataset (cats_vs_dogs, tf_flowers, beans)
  folder:PATH                PATH/CLASS/* or PATH/SPLIT/CLASS/* (JPEG, PNG, BMP, GIF)
  csv:PATH                   a CSV of image files and labels (tfpipe.data.csv_labels)

Every source yields (encoded image bytes, int64 label) in a fixed order and
answers split strings in tfds slicing syntax; decoding is the pipeline's job.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import os
import warnings
from typing import Mapping

import tensorflow as tf
import tensorflow_datasets as tfds

from tfpipe.data import csv_labels, file_index, folder, offline, splits, store
from tfpipe.data.builders import EMBEDDED_DATASET, LOCAL_DATASETS
from tfpipe.errors import TfpipeError
from tfpipe.paths import ensure_writable_dir

FOLDER_PREFIX = "folder:"
CSV_PREFIX = csv_labels.PREFIX
TFDS, FOLDER, CSV = "tfds", "folder", "csv"  # DatasetSpec.kind
DEFAULT_DATASET = EMBEDDED_DATASET
# Seconds one network check may take before a tfds download is declared impossible.
NETWORK_CHECK_SECONDS = 8.0


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A --dataset value, parsed once: what kind of source, and its tfds name or its path."""

    kind: str  # TFDS, FOLDER or CSV
    target: str  # NAME[/CONFIG][:VERSION] for tfds; an absolute path otherwise
    text: str  # as the user wrote it

    @classmethod
    def parse(cls, spec: DatasetSpec | str) -> DatasetSpec:
        if isinstance(spec, DatasetSpec):
            return spec
        text = spec.strip()
        for kind, prefix in ((FOLDER, FOLDER_PREFIX), (CSV, CSV_PREFIX)):
            if text.startswith(prefix):
                return cls(kind, os.path.abspath(os.path.expanduser(text[len(prefix) :])), text)
        return cls(TFDS, text, text)

    @property
    def is_local(self) -> bool:
        """Drawn by tfpipe itself on this machine: no download, no pretrained weights to fetch."""
        return self.kind == TFDS and self.target.split("/")[0].split(":")[0] in LOCAL_DATASETS

    def __str__(self) -> str:
        return self.text


class Source(abc.ABC):
    """Encoded examples of one dataset, addressed by tfds split strings."""

    name: str
    class_names: tuple[str, ...]
    data_dir: str | None = None  # open_source's: where its index and decoded stores live (store_root)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @abc.abstractmethod
    def split_sizes(self) -> dict[str, int]:
        """Examples in each named split, before slicing."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Changes whenever the examples or their labels may have: what keys a store of decoded images."""

    @abc.abstractmethod
    def mean_encoded_bytes(self) -> float:
        """An example's encoded image, on average over the dataset: what a shuffle buffer of
        encoded images holds per example."""

    def count(self, split: str, *, flag: str = "split") -> int:
        """Examples that `split` selects; raises TfpipeError on a bad split string."""
        return splits.count(splits.resolve(split, self.split_sizes(), flag=flag))

    def labels(self, split: str) -> list[int]:
        """The labels of `split`'s examples, in order: one pass over the records, no image decoded."""
        labels = self.encoded(split).map(lambda _, label: label, num_parallel_calls=tf.data.AUTOTUNE)
        return [int(label) for label in labels.as_numpy_iterator()]

    def class_counts(self, split: str) -> list[int]:
        """Examples of each class in `split`."""
        counts = [0] * self.num_classes
        for label in self.labels(split):
            counts[label] += 1
        return counts

    @abc.abstractmethod
    def encoded(self, split: str, *, parallel: bool = True, whole: bool = True) -> tf.data.Dataset:
        """(encoded image: tf.string, label: tf.int64) for `split`, in a fixed order.

        parallel=False: read one file at a time (a serial baseline to measure against).
        whole=False: the reader may be handed only part of the split (tf.data
        service's dynamic sharding), so it must not insist on seeing all of it.
        """


class TfdsSource(Source):
    def __init__(self, builder: tfds.core.DatasetBuilder, data_dir: str | None = None):
        self._builder = builder
        self.data_dir = data_dir
        self.name = builder.info.full_name
        keys = builder.info.supervised_keys
        features = builder.info.features
        if (
            not keys
            or not isinstance(features[keys[1]], tfds.features.ClassLabel)
            or not isinstance(features[keys[0]], tfds.features.Image)
        ):
            raise TfpipeError(
                f"{builder.name} is not an image classification dataset (it needs an image and a class label "
                "as supervised keys); pick one such as cats_vs_dogs, tf_flowers or beans"
            )
        self._image_key, self._label_key = keys
        self.class_names = tuple(features[self._label_key].names)

    def split_sizes(self) -> dict[str, int]:
        return {name: info.num_examples for name, info in self._builder.info.splits.items()}

    def fingerprint(self) -> str:
        """The prepared dataset's name and version, and its files' sizes and modification times
        (a dataset prepared again, even at the same version, gets a new fingerprint)."""
        folder = self._builder.data_dir
        digest = hashlib.sha1(f"{self.name}\0{folder}".encode())
        for name in sorted(tf.io.gfile.listdir(folder)):
            stat = tf.io.gfile.stat(os.path.join(folder, name))
            digest.update(f"\0{name}\0{stat.length}\0{stat.mtime_nsec}".encode())
        return digest.hexdigest()

    def mean_encoded_bytes(self) -> float:
        # The prepared records' bytes (labels and framing included: a slight overestimate).
        return int(self._builder.info.dataset_size) / max(1, sum(self.split_sizes().values()))

    def encoded(self, split: str, *, parallel: bool = True, whole: bool = True) -> tf.data.Dataset:
        read_config = tfds.ReadConfig(
            try_autocache=False,  # tfpipe decides where to cache, after resizing
            skip_prefetch=True,  # prefetch belongs at the end of the pipeline
            # tfds parses records in a map with at least one thread of its own.
            num_parallel_calls_for_decode=None if parallel else 1,
            # None: a synchronous interleave, reading one file at a time.
            num_parallel_calls_for_interleave_files=tf.data.AUTOTUNE if parallel else None,
            assert_cardinality=whole,
        )
        with warnings.catch_warnings():
            # tfds passes `deterministic` to its interleave even when it is
            # synchronous, where tf.data warns that it has no effect.
            warnings.filterwarnings("ignore", message="The `deterministic` argument has no effect")
            dataset = self._builder.as_dataset(
                split=split,
                as_supervised=True,
                shuffle_files=False,
                decoders={self._image_key: tfds.decode.SkipDecoding()},
                read_config=read_config,
            )
        return dataset.map(lambda image, label: (image, tf.cast(label, tf.int64)))


class FileSource(Source):
    """A folder: or csv: dataset: files listed with their labels, read by path."""

    def __init__(self, name: str, index: file_index.FileIndex, data_dir: str | None = None):
        self._index = index
        self.data_dir = data_dir
        self.name = name
        self.class_names = index.class_names

    @property
    def unreadable_files(self) -> tuple[str, ...]:
        return self._index.unreadable

    def split_sizes(self) -> dict[str, int]:
        return {name: len(paths) for name, (paths, _) in self._index.splits.items()}

    def fingerprint(self) -> str:
        return self._index.fingerprint

    def mean_encoded_bytes(self) -> float:
        return self._index.encoded_bytes / max(1, sum(self.split_sizes().values()))

    def labels(self, split: str) -> list[int]:
        """The labels of `split`'s examples, in order."""
        return [
            label
            for part in splits.resolve(split, self.split_sizes())
            for label in self._index.splits[part.split][1][part.start : part.stop]
        ]

    def encoded(self, split: str, *, parallel: bool = True, whole: bool = True) -> tf.data.Dataset:
        del whole  # a list of files splits cleanly under any sharding
        paths, labels = [], []
        for part in splits.resolve(split, self.split_sizes()):
            split_paths, split_labels = self._index.splits[part.split]
            paths.extend(split_paths[part.start : part.stop])
            labels.extend(split_labels[part.start : part.stop])
        dataset = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string), tf.constant(labels, tf.int64)))
        return dataset.map(
            lambda path, label: (tf.io.read_file(path), label),
            num_parallel_calls=tf.data.AUTOTUNE if parallel else None,
        )


def default_data_dir() -> str:
    """Where tfds keeps prepared datasets unless told otherwise."""
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def _resolve_data_dir(data_dir: str | None) -> str:
    return os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))


def store_root(data_dir: str | None) -> str:
    """DATA_DIR/tfpipe_store: where --cache=auto writes decoded stores (data.store)."""
    return os.path.join(_resolve_data_dir(data_dir), store.STORE_DIR)


def check_spec(
    spec: DatasetSpec | str, data_dir: str | None = None, csv: csv_labels.CsvOptions = csv_labels.CsvOptions()
) -> None:
    """The cheap half of open_source: the name, folder or CSV and its columns exist. Raises TfpipeError."""
    spec = DatasetSpec.parse(spec)
    if spec.kind == FOLDER:
        folder.find_layout(spec.target)
    elif spec.kind == CSV:
        csv_labels.check(spec.target, csv)
    else:
        _tfds_builder(spec.target, _resolve_data_dir(data_dir))


def open_source(
    spec: DatasetSpec | str, data_dir: str | None = None, csv: csv_labels.CsvOptions = csv_labels.CsvOptions()
) -> Source:
    """The source a --dataset spec names, prepared and ready to read.

    data_dir: where tfds datasets are prepared, and where folder: and csv:
    datasets keep their index cache (DATA_DIR/tfpipe_index).
    csv: how to read a csv: dataset (ignored by the others).
    """
    spec = DatasetSpec.parse(spec)
    data_dir = _resolve_data_dir(data_dir)
    index_cache = os.path.join(data_dir, file_index.INDEX_CACHE_DIR)
    if spec.kind == FOLDER:
        return FileSource(f"{FOLDER_PREFIX}{spec.target}", folder.index_folder(spec.target, index_cache), data_dir)
    if spec.kind == CSV:
        return FileSource(f"{CSV_PREFIX}{spec.target}", csv_labels.index_csv(spec.target, csv, index_cache), data_dir)
    builder = _tfds_builder(spec.target, data_dir)
    if not builder.is_prepared():
        _prepare(builder, spec.target, data_dir)
    return TfdsSource(builder, data_dir)


def _tfds_builder(spec: str, data_dir: str) -> tfds.core.DatasetBuilder:
    try:
        return tfds.builder(spec, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise TfpipeError(
            f"unknown dataset {spec!r}: use the embedded {EMBEDDED_DATASET!r} (the default, offline; "
            f"configs small, large, multiclass), '{FOLDER_PREFIX}PATH' for a folder of images, "
            f"'{CSV_PREFIX}LABELS.csv' for images listed in a CSV, "
            "or a tfds name such as cats_vs_dogs (listed by tfds.list_builders())"
        ) from None
    except (ValueError, AssertionError) as error:  # e.g. an unknown config or version
        reason = str(error).strip().splitlines()[0]
        raise TfpipeError(f"--dataset={spec!r}: {reason}") from None


def _prepare(builder: tfds.core.DatasetBuilder, spec: str, data_dir: str) -> None:
    ensure_writable_dir(data_dir, flag="data_dir")
    if not DatasetSpec.parse(spec).is_local:
        servers = offline.server_urls(builder.url_infos)
        if not offline.any_reachable(servers, timeout=NETWORK_CHECK_SECONDS):
            raise TfpipeError(
                f"{spec} is not prepared in {data_dir} and must be downloaded, but the network is unreachable "
                f"({', '.join(servers)} did not answer): on a machine with internet run `tfds build {builder.name} "
                f"--data_dir=DIR` (pip install tensorflow-datasets), copy DIR here and pass --data_dir=DIR"
            )
    builder.download_and_prepare()


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """What the rest of tfpipe needs to know about the data of a run."""

    name: str
    class_names: tuple[str, ...]
    split_specs: dict[str, str]  # role ("train", "validation", "test") -> split string
    num_examples: dict[str, int]  # role -> examples selected

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def describe(source: Source, *, flags: Mapping[str, str] | None = None, **split_specs: str) -> DatasetMetadata:
    """Checks each role's split (e.g. train="train[:80%]") and counts its examples.

    A role given an empty string is left out (a run without a test split).
    flags: the setting that names each role's split (role -> flag), for the error messages.
    """
    split_specs = {role: spec for role, spec in split_specs.items() if spec}
    counts = {}
    for role, spec in split_specs.items():
        flag = (flags or {}).get(role, role)
        counts[role] = source.count(spec, flag=flag)
        if counts[role] == 0:
            raise TfpipeError(
                f"--{flag}={spec!r} selects no examples of {source.name} (splits: "
                f"{', '.join(f'{k}={v}' for k, v in source.split_sizes().items())}); choose a wider slice"
            )
    return DatasetMetadata(source.name, tuple(source.class_names), split_specs, counts)
