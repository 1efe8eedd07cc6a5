"""bench_predict: how fast a model predicts on a folder of images, and is predict's input
pipeline the bottleneck?

    bench_predict --model_dir=runs/default --images=/data/photos
    bench_predict --model=runs/default/exported/best_int8.tflite --images=/data/photos --json=int8.json

Three numbers for the model (a run's Keras model, or a LiteRT, ONNX or SavedModel file
that export_model wrote, run by its own runtime):
  throughput  images/s of predict (decode, resize, model, rows) and of the model alone on
              the same images already decoded, batches of --batch_size; their ratio says
              whether decoding keeps up
  latency     milliseconds per image, one image per call, as an app classifying a camera
              frame sees it (median and 90th percentile)
Every side gets a warm-up call first, so none pays for tracing or allocation, and the
timed passes alternate between the two throughput sides.
"""

from __future__ import annotations

import numpy as np
from absl import flags

from tfpipe.bench import pipelines as bench
from tfpipe.bench import prediction
from tfpipe.cli import errors, results_file
from tfpipe.errors import TfpipeError
from tfpipe.inference import predict

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "The --model_dir a train run wrote (not needed for an exported --model).")
flags.DEFINE_string("model", predict.DEFAULT_MODEL, predict.MODEL_HELP + ".")
flags.DEFINE_string("images", None, "A folder of images (searched recursively).")
flags.DEFINE_integer("batch_size", predict.DEFAULT_BATCH_SIZE, "Images per batch, both throughput sides.")
flags.DEFINE_integer("repeats", 3, "Timed passes per throughput side, alternated.")
flags.DEFINE_integer("latency_images", 100, "Single-image calls timed for the latency (the first images).")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


def main(argv):
    del argv
    with errors.reported():
        if FLAGS.latency_images < 1 or FLAGS.repeats < 1:
            raise TfpipeError("--latency_images and --repeats must be at least 1")
        trained = predict.load(FLAGS.model_dir, FLAGS.model)
        paths = predict.find_images([FLAGS.images or ""])
    print(
        f"{len(paths)} images, model {trained.path} ({trained.runtime}) at {trained.image_size} px; "
        f"{bench.cores()} cores",
        flush=True,
    )
    results = prediction.measure(trained, paths, FLAGS.batch_size, FLAGS.repeats, FLAGS.latency_images)
    for key, label in (("predict", "predict (decode, resize, model, rows)"), ("direct", "model alone, decoded")):
        runs = ", ".join(f"{rate:,.1f}" for rate in results[key])
        print(f"{label:<38} median {np.median(results[key]):,.1f} images/s ({runs})")
    print(f"ratio of medians: {results['ratio']:.2f}x")
    latency = results["latency_ms"]
    print(f"latency, one image per call: median {latency['median']:.2f} ms, p90 {latency['p90']:.2f} ms")
    results_file.write(FLAGS.json, results)
