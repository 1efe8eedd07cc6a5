"""What turns an image file into the pixels a model sees, as one record that travels with the model.

    file bytes -> decode as RGB (JPEG, PNG, BMP, GIF's first frame; large JPEGs at 1/2, 1/4
    or 1/8 scale with jpeg_dct_scaling) -> resize the whole image to S x S, bilinear,
    stretched (no crop, no padding) -> uint8 [S, S, 3]

The model takes these bytes as they are and scales them itself (the backbone's own input
scaling is its first layer). A run writes its Preprocessing's record into
RUN/preprocessing.json when it starts (training.train); predict, evaluate, export_model
(calibration and check) and bench_predict read it back (inference.predict.run_preprocessing)
rather than building a default pipeline, and every exported file's record
carries it, in words an app developer can follow (Preprocessing.instructions). A model
scored on pixels decoded another way scores differently: a run trained without DCT
scaling and evaluated with it lost 0.6 points on real photos (issue 33).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfpipe.data import file_index
from tfpipe.errors import TfpipeError

RESIZE_METHOD = "bilinear"  # stretched to a square, as the tutorial's tf.image.resize
# libjpeg can decode at 1/2, 1/4 or 1/8 scale, skipping most of the inverse DCT.
_JPEG_SCALES = (1, 2, 4, 8)
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    image_size: int
    jpeg_dct_scaling: bool = True
    resize_method: str = RESIZE_METHOD

    def decode(self, encoded: tf.Tensor) -> tf.Tensor:
        """Encoded image bytes -> uint8 [S, S, 3], as training saw them."""
        return decode_and_resize(encoded, self.image_size, self.jpeg_dct_scaling)

    def decode_examples(self, examples: tf.data.Dataset) -> tf.data.Dataset:
        """(encoded bytes, label) -> (uint8 image, label), decoded and resized in parallel, in order."""
        return examples.map(lambda encoded, label: (self.decode(encoded), label), num_parallel_calls=tf.data.AUTOTUNE)

    @property
    def decode_options(self) -> str:
        """Everything besides the size that shapes the pixels (a key of the decoded store)."""
        return f"jpeg_dct_scaling={self.jpeg_dct_scaling},resize={self.resize_method}"

    def instructions(self) -> str:
        """What an app must give the model, in words."""
        size = self.image_size
        return (
            f"uint8 RGB pixels, shape [batch, {size}, {size}, 3], values 0-255 as decoded (no normalization: "
            f"the model scales them itself). Resize the whole image to {size} x {size} with bilinear "
            "interpolation, stretching it: no crop, no padding, the aspect ratio not kept. Drop any alpha "
            "channel; give grayscale images as three equal channels."
        )

    def record(self) -> dict:
        return {
            "image_size": self.image_size,
            "channels": "RGB",
            "dtype": "uint8",
            "value_range": [0, 255],
            "resize": {"method": self.resize_method, "aspect": "stretched to a square: no crop, no padding"},
            "jpeg_dct_scaling": self.jpeg_dct_scaling,
            "normalization": "none outside the model: it scales its uint8 input itself",
            "instructions": self.instructions(),
        }

    @classmethod
    def from_record(cls, record: dict, where: str) -> Preprocessing:
        try:
            preprocessing = cls(
                int(record["image_size"]), bool(record["jpeg_dct_scaling"]), str(record["resize"]["method"])
            )
        except (KeyError, TypeError, ValueError) as error:
            raise TfpipeError(f"{where} does not say how images were preprocessed ({error!r}); train again") from None
        if preprocessing.resize_method != RESIZE_METHOD:
            raise TfpipeError(f"{where} resizes with {preprocessing.resize_method!r}; tfpipe resizes {RESIZE_METHOD}")
        return preprocessing


# Branches on tensors with tf.cond and tf.switch_case, and on Python values alone with `if`, so
# AutoGraph has nothing to convert: converting it anyway made building a run's first pipeline
# take 0.43 s against 0.17 s (BUILD_NOTES.md, "Where a run's first seconds go").
@tf.autograph.experimental.do_not_convert
def decode_and_resize(encoded: tf.Tensor, image_size: int, jpeg_dct_scaling: bool = True) -> tf.Tensor:
    """One encoded image -> (image_size, image_size, 3) uint8, stretched like the tutorial's resize.

    With jpeg_dct_scaling, a JPEG at least twice the target size on both sides is
    decoded directly at 1/2, 1/4 or 1/8 scale (PIL calls this draft mode), never
    below the target size; the bilinear resize then has less to do and aliases less.
    """
    if jpeg_dct_scaling:
        image = tf.cond(
            tf.strings.substr(encoded, 0, 3) == _JPEG_MAGIC,
            lambda: _decode_jpeg_near(encoded, image_size),
            lambda: file_index.decode_image(encoded),
        )
    else:
        image = file_index.decode_image(encoded)
    image.set_shape([None, None, 3])
    # TensorFlow's bilinear kernel is vectorized for float32 input only: casting
    # first makes the resize cheaper than resizing uint8 directly.
    resized = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], method=RESIZE_METHOD)
    # Bilinear values are convex combinations of uint8 pixels: no clipping needed.
    return tf.cast(tf.round(resized), tf.uint8)


def _decode_jpeg_near(encoded, image_size):
    shape = tf.io.extract_jpeg_shape(encoded)
    shorter = tf.minimum(shape[0], shape[1])
    # Index of the largest scale that keeps the shorter side >= image_size.
    scale_index = tf.add_n([tf.cast(shorter >= image_size * s, tf.int32) for s in _JPEG_SCALES[1:]])
    return tf.switch_case(
        scale_index,
        [lambda s=s: tf.io.decode_jpeg(encoded, channels=3, ratio=s) for s in _JPEG_SCALES],
    )
