"""Datasets that ship as code inside tfpipe (registered with tfds on import)."""

from tfpipe.data.builders.fractals import TfpipeFractals
from tfpipe.data.builders.shapes import TfpipeShapes

EMBEDDED_DATASET = TfpipeShapes.name  # "tfpipe_shapes": the default, the downstream task
PRETRAINING_DATASET = TfpipeFractals.name  # "tfpipe_fractals": bin/pretrain's default dataset
# Drawn on the machine that prepares them: no download, no network check.
LOCAL_DATASETS = (EMBEDDED_DATASET, PRETRAINING_DATASET)

__all__ = ["EMBEDDED_DATASET", "LOCAL_DATASETS", "PRETRAINING_DATASET", "TfpipeFractals", "TfpipeShapes"]
