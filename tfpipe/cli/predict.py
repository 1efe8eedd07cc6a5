"""predict: what a trained run says about image files, folders or globs.

    predict --model_dir=runs/default photo.jpg holiday/ 'more/**/*.png'
    predict --model_dir=runs/default --top_k=3 --output=predictions.csv holiday/
    predict --model=runs/default/exported/best_int8.tflite photo.jpg    # an exported model

Class names and image size come from the run (results.json and the model), so no
training flag is repeated. Prints a table, or writes CSV or JSON by --output's
extension. A file that cannot be read or decoded gets a row saying why and the
others go on; the exit status is 1 when any file failed, 2 on bad input.
"""

from __future__ import annotations

import sys

from absl import flags

from tfpipe.cli import errors
from tfpipe.errors import TfpipeError
from tfpipe.inference import predict

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "The --model_dir a train run wrote.")
flags.DEFINE_string("model", predict.DEFAULT_MODEL, predict.MODEL_HELP + " (which needs no --model_dir).")
flags.DEFINE_integer("top_k", predict.DEFAULT_TOP_K, "How many classes to list per image, most probable first.")
flags.DEFINE_string("output", None, "Write the rows to FILE.csv or FILE.json instead of printing a table.")
flags.DEFINE_integer("batch_size", predict.DEFAULT_BATCH_SIZE, "Images per batch.")

EXIT_SOME_FAILED = 1


def main(argv):
    with errors.reported():
        rows = run(argv[1:])
    failed = sum(not row.ok for row in rows)
    if failed:
        print(f"predict: {failed} of {len(rows)} files could not be predicted; see their rows", file=sys.stderr)
        sys.exit(EXIT_SOME_FAILED)


def run(inputs: list[str]) -> list[predict.Prediction]:
    predict.check_model_named(FLAGS.model_dir, FLAGS.model)
    if FLAGS.top_k < 1:
        raise TfpipeError(f"--top_k={FLAGS.top_k} must be at least 1")
    if FLAGS.batch_size < 1:
        raise TfpipeError(f"--batch_size={FLAGS.batch_size} must be at least 1")
    if FLAGS.output:
        predict.check_output(FLAGS.output)
    paths = predict.find_images(inputs)
    trained = predict.load(FLAGS.model_dir, FLAGS.model)
    progress = _Progress(len(paths)) if len(paths) > FLAGS.batch_size else None
    rows = predict.predict(trained, paths, FLAGS.top_k, FLAGS.batch_size, on_batch=progress)
    if progress:
        progress.done()
    if FLAGS.output:
        predict.write(rows, FLAGS.output)
        print(f"Wrote {len(rows)} rows to {FLAGS.output}")
    else:
        print(predict.table(rows))
    return rows


class _Progress:
    """A one-line counter on stderr, so stdout keeps only the results."""

    def __init__(self, total: int):
        self.total, self.seen = total, 0

    def __call__(self, images: int) -> None:
        self.seen += images
        print(f"\rpredict: {self.seen}/{self.total} images", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        print(file=sys.stderr, flush=True)
