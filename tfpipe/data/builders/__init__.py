"""Datasets that ship as code inside tfpipe (registered with tfds on import)."""

from tfpipe.data.builders.shapes import TfpipeShapes

EMBEDDED_DATASET = TfpipeShapes.name  # "tfpipe_shapes"

__all__ = ["EMBEDDED_DATASET", "TfpipeShapes"]
