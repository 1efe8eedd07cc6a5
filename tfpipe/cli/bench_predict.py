"""bench_predict: is predict's input pipeline the bottleneck? Images/s of predict on a
folder against model.predict on the same images already decoded, same model.

    bench_predict --model_dir=runs/default --images=/data/photos

Both sides get a warm-up batch first, so neither pays for tracing, and the timed
passes alternate between them.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
from absl import flags

from tfpipe.bench import pipelines as bench
from tfpipe.cli import errors
from tfpipe.inference import predict

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "The --model_dir a train run wrote.")
flags.DEFINE_string("images", None, "A folder of images (searched recursively).")
flags.DEFINE_integer("batch_size", predict.DEFAULT_BATCH_SIZE, "Images per batch, both sides.")
flags.DEFINE_integer("repeats", 3, "Timed passes per side, alternated.")


def main(argv):
    del argv
    with errors.reported():
        trained = predict.load(FLAGS.model_dir or "", predict.DEFAULT_MODEL)
        paths = predict.find_images([FLAGS.images or ""])
    print(f"{len(paths)} images, model {trained.path} at {trained.image_size} px; {bench.cores()} cores", flush=True)
    decoded = np.concatenate(
        [images for _, images in predict.decoded_batches(paths, trained.image_size, FLAGS.batch_size)]
    )
    decoded_batches = tf.data.Dataset.from_tensor_slices(decoded).batch(FLAGS.batch_size).cache()
    predict.predict(trained, paths[: FLAGS.batch_size], batch_size=FLAGS.batch_size)  # warm-ups
    trained.model.predict(decoded_batches, verbose=0)
    rates = {"predict": [], "direct": []}
    for _ in range(FLAGS.repeats):  # alternated, so a slow spell of the machine hits both sides
        started = time.perf_counter()
        rows = predict.predict(trained, paths, batch_size=FLAGS.batch_size)
        rates["predict"].append(sum(row.ok for row in rows) / (time.perf_counter() - started))
        started = time.perf_counter()
        trained.model.predict(decoded_batches, verbose=0)
        rates["direct"].append(len(decoded) / (time.perf_counter() - started))
    for key, label in (("predict", "predict (decode, resize, model, rows)"), ("direct", "model.predict, decoded")):
        runs = ", ".join(f"{rate:,.1f}" for rate in rates[key])
        print(f"{label:<38} median {np.median(rates[key]):,.1f} images/s ({runs})")
    print(f"ratio of medians: {np.median(rates['predict']) / np.median(rates['direct']):.2f}x")
