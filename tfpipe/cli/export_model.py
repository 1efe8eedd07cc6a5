"""export_model: a trained run's model as a LiteRT, ONNX or SavedModel file, for a phone, a
browser or a server without TensorFlow.

    export_model --model_dir=runs/default                                 # LiteRT, float32
    export_model --model_dir=runs/default --quantize=int8                 # full integer
    export_model --model_dir=runs/default --format=onnx --quantize=dynamic
    predict --model=runs/default/exported/best_int8.tflite photo.jpg      # run it
    evaluate --model_dir=runs/default --model=runs/default/exported/best_int8.tflite

Writes RUN/exported/<model>_<precision>.<tflite|onnx> (or <model>_saved_model/), labels.txt
and a JSON record beside the model: format, quantization, what the input must be (the run's
preprocessing, in words), the output, class names, bytes, sha256, and the check. The
exported model takes uint8 images (batch, size, size, 3), as the Keras model does, and gives
one probability per class; a .tflite carries TFLite metadata with its labels, so MediaPipe
Tasks' ImageClassifier runs it as it is. int8 calibrates on --representative_images images
of the run's training split, decoded as training decoded them.

The check: the exported file and the Keras model classify up to --check_images images of the
run's validation split; the export fails, leaving no file, when the file's accuracy is more
than --max_accuracy_drop points below the Keras model's.
"""

from __future__ import annotations

import shlex
import sys

from absl import flags

from tfpipe.cli import errors
from tfpipe.errors import TfpipeError
from tfpipe.export import exporter, formats

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "The --model_dir a train run wrote.")
flags.DEFINE_string("model", exporter.ExportConfig.model, "Which of the run's models: best or final.")
flags.DEFINE_string("format", exporter.ExportConfig.format, f"One of {', '.join(formats.FORMATS)}.")
flags.DEFINE_string(
    "quantize",
    exporter.ExportConfig.quantize,
    f"One of {', '.join(formats.QUANTIZATIONS)}; int8 is full integer, calibrated on --representative_images.",
)
flags.DEFINE_string("output", None, "Where to write the model; default RUN/exported/<model>_<precision>.<extension>.")
flags.DEFINE_integer(
    "representative_images",
    exporter.DEFAULT_REPRESENTATIVE_IMAGES,
    f"Training images that calibrate int8 (at least {exporter.MIN_REPRESENTATIVE_IMAGES}).",
)
flags.DEFINE_integer(
    "check_images",
    exporter.DEFAULT_CHECK_IMAGES,
    "Validation images the exported file and the Keras model both classify before the file is kept.",
)
flags.DEFINE_float(
    "max_accuracy_drop",
    None,
    "Accuracy points the exported file may lose against the Keras model before the export fails; default: "
    + ", ".join(f"{points:g} for {quantize}" for quantize, points in exporter.MAX_ACCURACY_DROP.items())
    + ".",
)
flags.DEFINE_boolean("overwrite", False, "Replace an existing --output.")
flags.DEFINE_string("data_dir", None, "Where tfds datasets are prepared and read, as given to train.")


def main(argv):
    if len(argv) > 1:
        with errors.reported():
            raise TfpipeError(f"export_model takes no arguments, got {' '.join(argv[1:])}; see --help")
    with errors.reported():
        if not FLAGS.model_dir:
            raise TfpipeError("--model_dir is required: the directory a train run wrote")
        config = exporter.ExportConfig(
            model_dir=FLAGS.model_dir,
            format=FLAGS.format,
            quantize=FLAGS.quantize,
            model=FLAGS.model,
            output=FLAGS.output,
            representative_images=FLAGS.representative_images,
            check_images=FLAGS.check_images,
            max_accuracy_drop=FLAGS.max_accuracy_drop,
            overwrite=FLAGS.overwrite,
            data_dir=FLAGS.data_dir,
        )
        record = exporter.export_run(config, command=shlex.join(sys.argv), log=lambda line: print(line, flush=True))
    print(summary(record, config))


def summary(record: dict, config: exporter.ExportConfig) -> str:
    check = record["check"]
    return "\n".join(
        [
            f"Wrote {record['file']}: {record['format']}, quantization {record['quantization']}, "
            f"{record['bytes'] / 1e6:.2f} MB, sha256 {record['sha256'][:12]}...",
            f"  check on {check['images']} {check['split']} images: accuracy {check['exported_accuracy']:.1%} "
            f"(Keras {check['keras_accuracy']:.1%}, {check['accuracy_drop']:+.2f} points lower, bound "
            f"{check['max_accuracy_drop']:g}); agrees with the Keras model on {check['top1_agreement']:.1%}",
            f"  input: {record['input']['expects']}",
            f"  beside it: {record['labels']} and {record['file']}.json"
            + ("; the labels are inside the .tflite too (TFLite metadata)" if record.get("litert_metadata") else ""),
        ]
    )
