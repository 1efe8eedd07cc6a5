"""Flags for the data and the input pipeline, shared by every tool that reads data.

Importing this module defines the flags (the absl way); the helpers turn the
parsed values into the library's plain arguments.
"""

from __future__ import annotations

from absl import flags

from tfpipe.data import csv_labels, pipeline, service
from tfpipe.models import augment
from tfpipe.training.config import TrainConfig

FLAGS = flags.FLAGS
# Defaults come from the library's own: a run from flags and one from TrainConfig() agree.
_RUN = TrainConfig(model_dir="")
_PIPELINE = _RUN.pipeline

flags.DEFINE_string(
    "dataset",
    _RUN.dataset,
    "A tfds name with optional /CONFIG and :VERSION (cats_vs_dogs, tf_flowers, beans:0.1.0), "
    "folder:PATH for PATH/CLASS/* or PATH/SPLIT/CLASS/* images, csv:LABELS.csv for images listed with "
    "their labels in a CSV, or the embedded tfpipe_shapes (configs small, large, multiclass; runs offline).",
)
flags.DEFINE_string(
    "data_dir",
    None,
    "Where tfds datasets are prepared and read, and where folder: and csv: datasets keep their index cache "
    "(DATA_DIR/tfpipe_index); default ~/tensorflow_datasets.",
)
flags.DEFINE_string("image_dir", None, "csv: datasets: the folder the CSV's files are in; default: the CSV's folder.")
flags.DEFINE_string(
    "csv_file_column",
    None,
    f"csv: datasets: the column naming each image file; default: the first of {', '.join(csv_labels.FILE_COLUMNS)}.",
)
flags.DEFINE_string(
    "csv_label_column",
    None,
    f"csv: datasets: the column holding each label; default: the first of {', '.join(csv_labels.LABEL_COLUMNS)}.",
)
flags.DEFINE_string("train_split", _RUN.train_split, "Training split, in tfds slicing syntax.")
flags.DEFINE_string("val_split", _RUN.val_split, "Validation split, in tfds slicing syntax.")
flags.DEFINE_string("test_split", _RUN.test_split, "Test split, in tfds slicing syntax; empty for none.")
flags.DEFINE_integer(
    "image_size",
    None,
    "Images are resized to image_size x image_size; default: the size the backbone's ImageNet weights were "
    "trained at (224 for every built-in backbone).",
)
flags.DEFINE_integer("batch_size", _PIPELINE.batch_size, "Global batch size.")
flags.DEFINE_string(
    "cache",
    _PIPELINE.cache,
    "Where the decoded, resized uint8 images are kept, decoded once for every epoch: auto (in memory when they "
    "fit --memory_budget, else a decoded store on disk under DATA_DIR/tfpipe_store), memory, none, or a folder "
    "for the decoded store.",
)
flags.DEFINE_string(
    "memory_budget",
    None,
    "How much memory the data may hold (the image cache, the shuffle buffer, stored features and "
    "activations), e.g. 256MB or 8GB; default: the container's limit or the available memory, whichever is "
    "lower, less 2 GiB for TensorFlow and the model.",
)
flags.DEFINE_integer(
    "shuffle_buffer",
    _PIPELINE.shuffle_buffer,
    "Without a cache (--cache=none, or through --data_service), the shuffle buffer of encoded images; 0 holds "
    "the whole split. A cache shuffles the whole split by index and ignores it.",
)
flags.DEFINE_integer("seed", _PIPELINE.seed, "Seed for shuffling, augmentation and initialization; unset: random.")
flags.DEFINE_boolean(
    "jpeg_dct_scaling",
    _PIPELINE.jpeg_dct_scaling,
    "Decode large JPEGs at 1/2, 1/4 or 1/8 scale (never below image_size) before resizing.",
)
flags.DEFINE_string("augment", _RUN.augment, "Augmentation layers: NAME[=VALUE],... or none.")
flags.DEFINE_enum(
    "augment_on", _RUN.augment_on, augment.PLACEMENTS, "Run augmentation in the model or in the pipeline."
)
flags.DEFINE_string(
    "data_service", None, "grpc://HOST:PORT of a tf.data service dispatcher: preprocess there instead of here."
)
flags.DEFINE_enum(
    "data_service_sharding",
    _RUN.data_service_sharding,
    list(service.SHARDING),
    "off: every worker runs the whole pipeline; dynamic: each example once per epoch.",
)
flags.DEFINE_float(
    "data_service_timeout",
    _RUN.data_service_timeout,
    "Seconds without a batch from the service after which tfpipe checks its dispatcher and workers and "
    "stops with one line naming one that is gone (0: never check).",
)


def pipeline_config() -> pipeline.PipelineConfig:
    return pipeline.PipelineConfig(
        image_size=FLAGS.image_size,
        batch_size=FLAGS.batch_size,
        cache=FLAGS.cache,
        shuffle_buffer=FLAGS.shuffle_buffer,
        seed=FLAGS.seed,
        jpeg_dct_scaling=FLAGS.jpeg_dct_scaling,
    )


def csv_options() -> csv_labels.CsvOptions:
    return csv_labels.CsvOptions(
        image_dir=FLAGS.image_dir, file_column=FLAGS.csv_file_column, label_column=FLAGS.csv_label_column
    )


def augment_steps() -> tuple[tuple[str, str], ...]:
    return augment.parse(FLAGS.augment)


def data_service() -> service.DataService | None:
    return service.optional_service(FLAGS.data_service, FLAGS.data_service_sharding, FLAGS.data_service_timeout)
