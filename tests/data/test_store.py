"""The decoded store on disk: written once and read by index, keyed by everything that changes
its contents, safe against a killed write, and mixing the whole split every epoch."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from helpers.images import imbalanced_folder
from helpers.runs import fingerprints
from helpers.tools import REPO

from tfpipe import memory
from tfpipe.data import pipeline, sources, store
from tfpipe.errors import TfpipeError


def _config(cache, **overrides):
    return pipeline.PipelineConfig(**{"image_size": 16, "batch_size": 4, "seed": 3, "cache": cache, **overrides})


def _epoch(source, cache_dir, split="train", **overrides):
    logged = []
    dataset = pipeline.build(source, split, _config(str(cache_dir), **overrides), training=False, log=logged.append)
    labels = [int(label) for _, batch in dataset for label in batch]
    return sorted(fingerprints(dataset)), labels, logged


def test_a_second_pipeline_on_the_same_data_reads_the_store_and_decodes_nothing(tmp_path):
    folder = imbalanced_folder(tmp_path / "images", (7, 5))
    source = sources.open_source(f"folder:{folder}", str(tmp_path / "data"))
    written, labels, log = _epoch(source, tmp_path / "store")
    assert len(written) == 12 and sorted(labels) == [0] * 7 + [1] * 5
    assert any(line.startswith("Decoded store: writing 12 images of train") for line in log)
    for name in ("c0", "c1"):  # the images are gone: only the store can give them now
        for image in os.listdir(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name, image))
    again, labels_again, log = _epoch(source, tmp_path / "store")
    assert again == written and sorted(labels_again) == sorted(labels)
    assert any(line.startswith("Decoded store: reading 12 images of train from") for line in log)


def _reopened(tmp_path, spec, **csv):
    return sources.open_source(spec, str(tmp_path / "data"), sources.csv_labels.CsvOptions(**csv))


def test_an_added_a_removed_or_a_touched_file_gets_a_new_store(tmp_path):
    folder = imbalanced_folder(tmp_path / "images", (6, 6))
    spec = f"folder:{folder}"
    first, _, _ = _epoch(_reopened(tmp_path, spec), tmp_path / "store")
    assert len(first) == 12
    imbalanced_folder(tmp_path / "extra", (1, 0), separation=90)  # one image of another look
    os.rename(tmp_path / "extra" / "c0" / "0.png", os.path.join(folder, "c0", "new.png"))
    added, _, log = _epoch(_reopened(tmp_path, spec), tmp_path / "store")
    assert len(added) == 13 and set(first) < set(added)
    assert any(line.startswith("Decoded store: writing 13 images") for line in log)
    os.remove(os.path.join(folder, "c1", "0.png"))
    removed, _, _ = _epoch(_reopened(tmp_path, spec), tmp_path / "store")
    assert len(removed) == 12 and set(removed) < set(added)
    # Same name and size, other pixels (a file replaced in place): its modification time tells.
    target = os.path.join(folder, "c0", "1.png")
    replacement = tf.io.encode_png(np.full((16, 16, 3), 7, np.uint8)).numpy()
    with open(target, "wb") as out:
        out.write(replacement)
    os.utime(target, ns=(os.stat(target).st_atime_ns, os.stat(target).st_mtime_ns + 10**9))
    touched, _, _ = _epoch(_reopened(tmp_path, spec), tmp_path / "store")
    assert len(touched) == 12 and touched != removed
    assert len(os.listdir(tmp_path / "store")) == 4  # one store per state of the folder


def test_a_changed_csv_label_column_gets_a_new_store(tmp_path):
    folder = imbalanced_folder(tmp_path / "images", (4, 4))
    rows = [f"c{label}/{i}.png,{label},{i % 2}" for label in (0, 1) for i in range(4)]
    (tmp_path / "images" / "labels.csv").write_text("file,label,other\n" + "\n".join(rows) + "\n")
    spec = f"csv:{folder}/labels.csv"
    _, by_label, _ = _epoch(_reopened(tmp_path, spec), tmp_path / "store")
    _, by_other, log = _epoch(_reopened(tmp_path, spec, label_column="other"), tmp_path / "store")
    assert any(line.startswith("Decoded store: writing 8 images") for line in log)
    source = _reopened(tmp_path, spec, label_column="other")
    assert sorted(by_other) == sorted(source.labels("train")) and by_label != by_other


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import tensorflow as tf
    from tfpipe.data import pipeline, sources, store
    source = sources.open_source({spec!r}, {data!r})
    real = store.tf.io.gfile.GFile
    class Dying(real):
        written = 0
        def write(self, data):
            Dying.written += 1
            if Dying.written == 5:  # mid-way through the images
                os.kill(os.getpid(), signal.SIGKILL)
            return super().write(data)
    store.tf.io.gfile.GFile = Dying
    config = pipeline.PipelineConfig(image_size=16, batch_size=4, cache={cache!r})
    pipeline.build(source, "train", config, training=False, log=print)
    """
)


def test_a_write_killed_midway_leaves_nothing_a_later_run_trusts(tmp_path):
    folder = imbalanced_folder(tmp_path / "images", (6, 6))
    spec, data, cache = f"folder:{folder}", str(tmp_path / "data"), str(tmp_path / "store")
    script = _KILLED_WRITER.format(tests=os.path.join(REPO, "tests"), spec=spec, data=data, cache=cache)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    (leftover,) = os.listdir(cache)
    assert leftover.startswith(".tmp-") and "manifest.json" not in os.listdir(os.path.join(cache, leftover))
    source = sources.open_source(spec, data)
    key = store.StoreKey(
        source.name, source.fingerprint(), "train", 16, _config(cache).decode_options, None, None
    )
    assert store.open_store(cache, key) is None  # nothing complete to trust
    images, labels, log = _epoch(source, cache)
    assert len(images) == 12 and any(line.startswith("Decoded store: writing 12") for line in log)
    assert os.listdir(cache) == [key.folder_name()]  # the killed writer's leftover is gone


class _SortedByClass(sources.Source):
    """64 images, 16 of each of 4 classes, in class order: the worst order for a shuffle buffer."""

    name = "sorted_by_class"
    class_names = ("a", "b", "c", "d")

    def split_sizes(self):
        return {"train": 64}

    def fingerprint(self):
        return "sorted-by-class-1"

    def mean_encoded_bytes(self):
        return 100.0

    def encoded(self, split, *, parallel=True, whole=True):
        labels = np.repeat(np.arange(4), 16)
        images = [tf.io.encode_png(np.full((8, 8, 3), 3 * i, np.uint8)) for i in range(64)]
        return tf.data.Dataset.from_tensor_slices((tf.stack(images), tf.constant(labels, tf.int64)))


def test_the_store_shuffles_the_whole_split_every_epoch_whatever_its_order(tmp_path):
    source = _SortedByClass()
    # A shuffle buffer of 2 would leave a sorted stream sorted: the store ignores it for its indices.
    config = pipeline.PipelineConfig(image_size=8, batch_size=8, seed=5, cache=str(tmp_path), shuffle_buffer=2)
    dataset = pipeline.build(source, "train", config, training=True, log=lambda _: None)
    epochs = []
    for _ in range(2):
        batches = [labels.numpy() for _, labels in dataset]
        assert len(batches) == 8 and sorted(np.concatenate(batches)) == list(np.repeat(np.arange(4), 16))
        # Every batch of the first epoch mixes classes; most hold 3 or all 4 of them.
        assert all(len(set(batch)) >= 2 for batch in batches)
        assert np.mean([len(set(batch)) >= 3 for batch in batches]) >= 0.75
        epochs.append(np.concatenate(batches))
    assert not np.array_equal(epochs[0], epochs[1])  # a fresh order each epoch


def test_auto_keeps_the_images_in_memory_when_they_fit_and_on_disk_when_not():
    ledger = memory.Ledger(memory.MemoryBudget(16_000, "a test budget"))
    cache, line = pipeline.choose_cache("auto", 3, 3000, ledger, "/stores")
    # 3 images and labels of 3,008 bytes, at the memory cache's peak (1.2x)
    assert cache == "memory" and ledger.left == 16_000 - int(1.2 * 3 * 3008)
    assert line.startswith("Cache: in memory (--cache=auto): 3 decoded images take 11 KiB, within the")
    cache, line = pipeline.choose_cache("auto", 3, 3000, ledger, "/stores")
    assert cache == "/stores" and line.startswith("Cache: a decoded store on disk in /stores: 3 decoded images")
    assert line.endswith("more than the 5 KiB left of the memory budget")


def test_memory_that_cannot_fit_fails_at_once_with_both_numbers_and_the_flags():
    ledger = memory.Ledger(memory.MemoryBudget(2**20, "--memory_budget=1MB"))
    with pytest.raises(TfpipeError) as error:
        pipeline.choose_cache("memory", 1000, 150_528, ledger, "/stores")
    message = str(error.value)
    assert "1000 decoded images take 172 MiB, more than the 1 MiB left of the memory budget (--memory_budget=1MB)" in message
    assert "--cache=auto" in message and "--memory_budget" in message


def test_auto_without_a_run_s_plan_writes_the_store_under_the_source_s_data_dir(tmp_path, monkeypatch):
    folder = imbalanced_folder(tmp_path / "images", (3, 3))
    source = sources.open_source(f"folder:{folder}", str(tmp_path / "data"))
    tiny = memory.MemoryBudget(1, "a test budget of one byte")
    monkeypatch.setattr(memory.MemoryBudget, "detect", classmethod(lambda cls, *args, **kwargs: tiny))
    logged = []
    dataset = pipeline.build(source, "train", _config("auto"), training=False, log=logged.append)
    assert len(fingerprints(dataset)) == 6
    root = str(tmp_path / "data" / store.STORE_DIR)
    assert any(line.startswith(f"Cache: a decoded store on disk in {root}") for line in logged), logged
    assert os.listdir(root)
