"""Which on-disk format for the decoded store (issue 32): write speed, read speed with a fresh
order every epoch, and peak RSS, each format in its own processes (one writes, one reads).

    python docs/experiments/store_formats.py --dataset=tfpipe_shapes/large --image_size=224 --out=/tmp/stores

Formats: the fixed-size raw records tfpipe chose (read by index through tf.io.gfile, or through
np.memmap), ArrayRecord (the array_record package tfds brings), tf.data's Dataset.save/load,
TFRecord of raw bytes, and tf.data's file cache (Dataset.cache(path), tfpipe's old --cache=DIR).
The index-read formats shuffle a permutation of the whole split every epoch; the sequential ones
read in write order through a shuffle buffer of 1,000 decoded images (what tfpipe's default
--shuffle_buffer gives), which costs memory and mixes less.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from tfpipe.data import pipeline, sources

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "tfpipe_shapes/large", "")
flags.DEFINE_string("data_dir", None, "")
flags.DEFINE_string("split", "train[:80%]", "")
flags.DEFINE_integer("image_size", 224, "")
flags.DEFINE_integer("batch_size", 32, "")
flags.DEFINE_integer("epochs", 2, "read epochs")
flags.DEFINE_string("out", "/tmp/tfpipe-store-formats", "")
flags.DEFINE_string("format", None, "internal: measure one format")
flags.DEFINE_enum("phase", None, ["decode", "write", "read"], "internal")

FORMATS = ["raw_gfile", "raw_memmap", "array_record", "tf_save", "tfrecord", "tf_cache_file"]
BUFFER = 1000


def peak_rss_mb():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so each child would report
    # at least this orchestrating process's own peak.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024


def decoded():
    source = sources.open_source(FLAGS.dataset, FLAGS.data_dir)
    config = pipeline.PipelineConfig(image_size=FLAGS.image_size, batch_size=1, cache="none")
    size = FLAGS.image_size
    ds = source.encoded(FLAGS.split).map(
        lambda e, l: (pipeline.decode_and_resize(e, size, True), l), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.with_options(pipeline.pipeline_options(None)), source.count(FLAGS.split)


def write(fmt, folder):
    ds, count = decoded()
    record = FLAGS.image_size**2 * 3
    if fmt in ("raw_gfile", "raw_memmap"):
        labels = []
        with tf.io.gfile.GFile(os.path.join(folder, "images.bin"), "wb") as out:
            for images, batch_labels in ds.batch(256).as_numpy_iterator():
                out.write(images.tobytes())
                labels.extend(batch_labels.tolist())
        np.save(os.path.join(folder, "labels.npy"), np.array(labels))
    elif fmt == "array_record":
        from array_record.python import array_record_module as ar

        writer = ar.ArrayRecordWriter(os.path.join(folder, "images.array_record"), "group_size:1,uncompressed")
        labels = []
        for images, batch_labels in ds.batch(256).as_numpy_iterator():
            for image in images:
                writer.write(image.tobytes())
            labels.extend(batch_labels.tolist())
        writer.close()
        np.save(os.path.join(folder, "labels.npy"), np.array(labels))
    elif fmt == "tf_save":
        ds.save(os.path.join(folder, "saved"))
    elif fmt == "tfrecord":
        with tf.io.TFRecordWriter(os.path.join(folder, "images.tfrecord")) as out:
            for image, label in ds.as_numpy_iterator():
                feature = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                }
                out.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    elif fmt == "tf_cache_file":
        cached = ds.cache(os.path.join(folder, "cache"))
        for _ in cached.batch(256):
            pass
    return count


def reader(fmt, folder):
    size = FLAGS.image_size
    shape = (size, size, 3)
    record = size * size * 3
    if fmt in ("raw_gfile", "raw_memmap", "array_record"):
        labels = np.load(os.path.join(folder, "labels.npy"))
        count = len(labels)
        if fmt == "raw_memmap":
            images = np.memmap(os.path.join(folder, "images.bin"), np.uint8, "r", shape=(count, *shape))

            def read(indices):
                return images[np.sort(indices)] if False else images[indices]

        elif fmt == "raw_gfile":
            import threading

            files = {}

            def read(indices):
                f = files.setdefault(threading.get_ident(), tf.io.gfile.GFile(os.path.join(folder, "images.bin"), "rb"))
                out = np.empty((len(indices), *shape), np.uint8)
                for position in np.argsort(indices):
                    f.seek(int(indices[position]) * record)
                    out[position] = np.frombuffer(f.read(record), np.uint8).reshape(shape)
                return out

        else:
            from array_record.python import array_record_module as ar

            ar_reader = ar.ArrayRecordReader(os.path.join(folder, "images.array_record"), "readahead_buffer_size:0")

            def read(indices):
                blobs = ar_reader.read(indices.tolist())
                return np.frombuffer(b"".join(blobs), np.uint8).reshape(len(indices), *shape)

        label_table = tf.constant(labels)

        def make(epoch):
            idx = tf.data.Dataset.range(count).shuffle(count, seed=epoch).batch(FLAGS.batch_size, drop_remainder=True)

            def load(indices):
                images = tf.numpy_function(read, [indices], tf.uint8, stateful=False)
                images.set_shape([FLAGS.batch_size, *shape])
                return images, tf.gather(label_table, indices)

            return idx.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)

        return make, count
    if fmt == "tf_save":
        base = tf.data.Dataset.load(os.path.join(folder, "saved"))
    elif fmt == "tfrecord":
        spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

        def parse(serialized):
            example = tf.io.parse_single_example(serialized, spec)
            return tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), shape), example["label"]

        base = tf.data.TFRecordDataset(os.path.join(folder, "images.tfrecord"), buffer_size=8 << 20).map(
            parse, num_parallel_calls=tf.data.AUTOTUNE
        )
    else:  # the file cache: reading it needs the same pipeline with the cache in it
        base = decoded()[0].cache(os.path.join(folder, "cache"))
    count = sum(1 for _ in base.batch(4096).map(lambda x, y: y))

    def make(epoch):
        return base.shuffle(BUFFER, seed=epoch).batch(FLAGS.batch_size, drop_remainder=True).prefetch(2)

    return make, count


def measure_one():
    fmt, folder = FLAGS.format, os.path.join(FLAGS.out, FLAGS.format)
    if FLAGS.phase == "decode":
        ds, count = decoded()
        started = time.monotonic()
        for _ in ds.batch(256):
            pass
        result = {"seconds": time.monotonic() - started, "count": count}
    elif FLAGS.phase == "write":
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        started = time.monotonic()
        count = write(fmt, folder)
        result = {"seconds": time.monotonic() - started, "count": count}
        result["disk_mb"] = sum(
            os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files
        ) / 2**20
    else:
        make, count = reader(fmt, folder)
        rates, first_labels = [], []
        for epoch in range(FLAGS.epochs):
            started = time.monotonic()
            n = 0
            for i, (images, labels) in enumerate(make(epoch)):
                n += int(images.shape[0])
                if i == 0:
                    first_labels.append(labels.numpy().tolist())
            rates.append(n / (time.monotonic() - started))
        result = {"images_per_sec": rates, "count": count, "first_batch_classes": [len(set(l)) for l in first_labels]}
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result))


def run(fmt, phase):
    command = [sys.executable, __file__, f"--format={fmt}", f"--phase={phase}"] + [
        f"--{name}={FLAGS[name].value}" for name in ("dataset", "split", "image_size", "batch_size", "epochs", "out")
    ] + ([f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else [])
    # The page cache would serve reads from memory; drop what this folder left there when we can.
    out = subprocess.run(command, capture_output=True, text=True)
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    if not line:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(line[0][7:])


def main(argv):
    if FLAGS.format:
        measure_one()
        return
    idle = run("raw_gfile", "decode")
    print(f"decode + resize alone: {idle['count'] / idle['seconds']:,.0f} images/s, peak RSS {idle['peak_rss_mb']:,.0f} MB")
    print("| format | write (decode + write) images/s | write peak RSS MB | disk MB | read images/s, epochs | read peak RSS MB | classes in first batch |")
    print("|---|---|---|---|---|---|---|")
    for fmt in FORMATS:
        w = run(fmt, "write")
        r = run(fmt, "read")
        rates = ", ".join(f"{x:,.0f}" for x in r["images_per_sec"])
        print(
            f"| {fmt} | {w['count'] / w['seconds']:,.0f} | {w['peak_rss_mb']:,.0f} | {w.get('disk_mb', 0):,.0f} | "
            f"{rates} | {r['peak_rss_mb']:,.0f} | {r['first_batch_classes']} |",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
