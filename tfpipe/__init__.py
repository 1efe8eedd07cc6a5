"""tfpipe: fine-tune pretrained image classifiers with TensorFlow, with an input
pipeline that is never the bottleneck.

    import tfpipe
    results = tfpipe.train(tfpipe.TrainConfig(model_dir="runs/demo", fine_tune_at="100"))
    trained = tfpipe.load_run("runs/demo")                 # best.keras, class names, image size
    rows = tfpipe.predict(trained, ["photo.jpg"])          # top classes per image
    report, folder = tfpipe.evaluate_run("runs/demo")      # the test split's evaluation report
    record = tfpipe.export_run(tfpipe.ExportConfig("runs/demo", quantize="int8"))  # a .tflite file

The package, by role (each subpackage's docstring says what it owns and may import):

    data/       sources (tfds, folder:, csv:), split slicing, preprocessing, the tf.data
                pipeline, the caches (in memory, the decoded store on disk), each epoch's
                order, class balance, the embedded tfds builders, the tf.data service
    models/     backbones and their weights, the classifier and its train_step, augmentation
    training/   train() and TrainConfig, the two-phase schedule, fast feature extraction,
                cached activations, the memory plan, resume inside an epoch, the input wait,
                callbacks, tf.distribute, pretraining
    runs/       the run directory: file names, checkpoints and resume, the lock
    inference/  predictions on image files, the evaluation report, the pictures; running an
                exported model (LiteRT, ONNX, SavedModel)
    export/     a run's model as a LiteRT, ONNX or SavedModel file, quantized, with its record
    bench/      measuring the input pipeline and prediction speed
    cli/        the command-line tools: the only place that defines and reads absl flags
    errors, paths, atomic, memory: what every layer may use (the one error type, writable
                folders, writes that a kill cannot tear, the memory budget)

Dependencies point one way: cli -> training, export -> inference -> runs, models, data ->
errors, paths, atomic, memory; data/ and models/ know nothing of runs.

Importing tfpipe registers its Keras layers and model class, so models it saved load
with keras.models.load_model. The public names below load on first use.
"""

__version__ = "0.1.0"

from tfpipe.models import backbones as _backbones  # noqa: E402,F401  (registers custom Keras objects)
from tfpipe.models import classifier as _classifier  # noqa: E402,F401  (registers custom Keras objects)

# name -> (module, attribute): imported when first asked for, so `import tfpipe` stays light.
_PUBLIC = {
    "train": ("tfpipe.training.train", "train"),
    "TrainConfig": ("tfpipe.training.config", "TrainConfig"),
    "PipelineConfig": ("tfpipe.data.pipeline", "PipelineConfig"),
    "pretrain": ("tfpipe.training.pretrain", "pretrain"),
    "PretrainConfig": ("tfpipe.training.pretrain", "PretrainConfig"),
    "load_run": ("tfpipe.inference.predict", "load"),
    "TrainedModel": ("tfpipe.inference.predict", "TrainedModel"),
    "predict": ("tfpipe.inference.predict", "predict"),
    "evaluate_run": ("tfpipe.inference.evaluation", "evaluate_run"),
    "export_run": ("tfpipe.export.exporter", "export_run"),
    "ExportConfig": ("tfpipe.export.exporter", "ExportConfig"),
    "TfpipeError": ("tfpipe.errors", "TfpipeError"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tfpipe' has no attribute {name!r}")
    import importlib

    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
