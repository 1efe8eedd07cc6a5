"""TFLite metadata in an exported .tflite, so that MediaPipe Tasks' ImageClassifier (Android,
iOS, web, Python) runs the file as it is and names its classes.

What the file gets, as MediaPipe's image classifier reads it:
  - the metadata flatbuffer (ModelMetadata, file identifier "M001") in the model's
    "TFLITE_METADATA" metadata buffer: a name and a description; the input tensor as an RGB
    image with its size and what it expects (uint8 pixels 0-255, the resize; an int8 file's
    input quantization), normalization mean 0 and std 1 (the model scales its own input);
    the output as one probability per class, with labels.txt attached to its class axis;
  - labels.txt packed into the file as a zip archive appended to the flatbuffer, the way
    TFLite metadata carries associated files.

Written with the metadata schema that mediapipe ships (mediapipe.tasks.metadata:
metadata_schema_py_generated, schema_py_generated), not with its metadata writer: in
mediapipe 1.2.2 the writer imports a compiled module (_pywrap_metadata_version) that the
wheel lacks. That module only computes min_parser_version, "the largest version among the
fields populated": every field used here dates from schema 1.0.0, so it is 1.0.0.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from tfpipe.inference.runtimes import require_package

METADATA_NAME = "TFLITE_METADATA"
_METADATA_IDENTIFIER = b"M001"
_MODEL_IDENTIFIER = b"TFL3"
MIN_PARSER_VERSION = "1.0.0"  # every field used here is in metadata schema 1.0.0


def embed(
    model: bytes,
    *,
    class_names,
    labels_file: str,
    input_description: str,
    name: str,
    description: str,
    version: str,
    license_text: str,
) -> bytes:
    """`model` (a .tflite flatbuffer) with image-classifier metadata and labels_file packed in."""
    require_package("mediapipe", "mediapipe", needed_for="the metadata of a --format=litert export")
    import flatbuffers
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta
    from mediapipe.tasks.metadata import schema_py_generated as tflite

    tree = tflite.ModelT.InitFromObj(tflite.Model.GetRootAsModel(model, 0))
    graph = tree.subgraphs[0]
    # One input and one output, or this unpacking fails: the metadata describes exactly those.
    (image,), (_,) = [graph.tensors[i] for i in graph.inputs], [graph.tensors[i] for i in graph.outputs]
    quantization = _quantization(image)

    image_metadata = meta.TensorMetadataT()
    image_metadata.name = "image"
    image_metadata.description = input_description + (f" {quantization}" if quantization else "")
    image_metadata.content = meta.ContentT()
    image_metadata.content.contentPropertiesType = meta.ContentProperties.ImageProperties
    image_metadata.content.contentProperties = meta.ImagePropertiesT()
    image_metadata.content.contentProperties.colorSpace = meta.ColorSpaceType.RGB
    normalization = meta.ProcessUnitT()
    normalization.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    normalization.options = meta.NormalizationOptionsT()
    normalization.options.mean, normalization.options.std = [0.0], [1.0]  # pixels as decoded
    image_metadata.processUnits = [normalization]
    image_metadata.stats = _stats(0.0, 255.0)

    labels = meta.AssociatedFileT()
    labels.name = labels_file
    labels.description = "The class names, one per line, in the order of the output's probabilities."
    labels.type = meta.AssociatedFileType.TENSOR_AXIS_LABELS
    scores_metadata = meta.TensorMetadataT()
    scores_metadata.name = "probability"
    scores_metadata.description = (
        f"The probability of each of the {len(class_names)} classes, in the order of {labels_file}; they sum to 1."
    )
    scores_metadata.content = meta.ContentT()
    scores_metadata.content.contentPropertiesType = meta.ContentProperties.FeatureProperties
    scores_metadata.content.contentProperties = meta.FeaturePropertiesT()
    scores_metadata.stats = _stats(0.0, 1.0)
    scores_metadata.associatedFiles = [labels]

    subgraph = meta.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [image_metadata], [scores_metadata]
    metadata = meta.ModelMetadataT()
    metadata.name, metadata.description, metadata.version = name, description, version
    metadata.author, metadata.license = "tfpipe", license_text
    metadata.subgraphMetadata = [subgraph]
    metadata.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(0)
    builder.Finish(metadata.Pack(builder), _METADATA_IDENTIFIER)

    buffer = tflite.BufferT()
    buffer.data = np.frombuffer(bytes(builder.Output()), np.uint8)
    tree.buffers.append(buffer)
    field = tflite.MetadataT()
    field.name, field.buffer = METADATA_NAME, len(tree.buffers) - 1
    tree.metadata = [m for m in (tree.metadata or []) if m.name.decode() != METADATA_NAME] + [field]
    builder = flatbuffers.Builder(0)
    builder.Finish(tree.Pack(builder), _MODEL_IDENTIFIER)
    packed = io.BytesIO(bytes(builder.Output()))
    packed.seek(0, io.SEEK_END)
    with zipfile.ZipFile(packed, "a") as archive:  # associated files: a zip after the flatbuffer
        archive.writestr(labels_file, "".join(f"{name}\n" for name in class_names))
    return packed.getvalue()


def _stats(low: float, high: float):
    from mediapipe.tasks.metadata import metadata_schema_py_generated as meta

    stats = meta.StatsT()
    stats.min, stats.max = [low], [high]
    return stats


def _quantization(tensor) -> str | None:
    """An integer input's quantization, in words: real value = scale x (pixel - zero point)."""
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    return (
        f"The input tensor is quantized: real value = {float(q.scale[0]):g} x (pixel - {int(q.zeroPoint[0])}), "
        "which the model handles; give it the pixels."
    )


def read(model: bytes) -> tuple[bytes | None, dict[str, bytes]]:
    """(the metadata flatbuffer or None, the packed associated files): what a reader of the file finds."""
    from mediapipe.tasks.metadata import schema_py_generated as tflite

    root = tflite.Model.GetRootAsModel(model, 0)
    metadata = None
    for i in range(root.MetadataLength()):
        if root.Metadata(i).Name().decode() == METADATA_NAME:
            metadata = root.Buffers(root.Metadata(i).Buffer()).DataAsNumpy().tobytes()
    files = {}
    if zipfile.is_zipfile(io.BytesIO(model)):
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            files = {name: archive.read(name) for name in archive.namelist()}
    return metadata, files
