"""evaluate: where a trained run is wrong, as a report and two pictures.

    evaluate --model_dir=runs/default                       # the run's test split
    evaluate --model_dir=runs/default --split='train[80%:90%]'

Reads the run's dataset and splits from its checkpoint, evaluates the best model
(or --model) and writes MODEL_DIR/evaluation/: report.json (accuracy, loss,
per-class precision, recall, F1 and support, averages, confusion matrix, top-5
accuracy above 5 classes, ROC AUC for 2), confusion_matrix.png and mistakes.png.
A split other than the run's test split goes to evaluation/<split>/; an exported
model's report (--model=RUN/exported/best_int8.tflite) to evaluation/<its file name>/.
"""

from __future__ import annotations

from absl import flags

from tfpipe.cli import errors
from tfpipe.errors import TfpipeError
from tfpipe.inference import evaluation, predict

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "The --model_dir a train run wrote.")
flags.DEFINE_string("split", None, "Split to evaluate, in tfds slicing syntax; default: the run's test split.")
flags.DEFINE_string("model", predict.DEFAULT_MODEL, predict.MODEL_HELP + ".")
flags.DEFINE_string("data_dir", None, "Where tfds datasets are prepared and read, as given to train.")


def main(argv):
    del argv
    with errors.reported():
        if not FLAGS.model_dir:
            raise TfpipeError("--model_dir is required: the directory a train run wrote")
        result, folder = evaluation.evaluate_run(FLAGS.model_dir, FLAGS.split, FLAGS.model, FLAGS.data_dir)
    print(evaluation.summary(result))
    for name, scores in result["per_class"].items():
        print(
            f"  {name}: precision {scores['precision']:.3f}, recall {scores['recall']:.3f}, "
            f"F1 {scores['f1']:.3f}, support {scores['support']}"
        )
    print(f"Wrote {folder}/")
