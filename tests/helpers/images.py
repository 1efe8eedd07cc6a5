"""Image folders for tests, written as PNG files."""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow as tf


def imbalanced_folder(root, counts, size=16, split=None, separation=40) -> str:
    """ROOT[/SPLIT]/cK/ folders of counts[K] plain noisy images, class K brighter by K x `separation`."""
    rng = np.random.default_rng([len(split or ""), *counts])
    for label, count in enumerate(counts):
        folder = os.path.join(root, split, f"c{label}") if split else os.path.join(root, f"c{label}")
        os.makedirs(folder, exist_ok=True)
        for i in range(count):
            level = rng.normal(100 + separation * label, 25)
            pixels = np.clip(rng.normal(level, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            with open(os.path.join(folder, f"{i}.png"), "wb") as out:
                out.write(tf.io.encode_png(pixels).numpy())
    return str(root)


def write_image(path: str, pixels: np.ndarray, fmt: str) -> None:
    if fmt == "jpeg":
        data = tf.io.encode_jpeg(pixels).numpy()
    elif fmt == "png":
        data = tf.io.encode_png(pixels).numpy()
    else:  # bmp and gif through Pillow, which tfds' dependencies bring
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt.upper())
        data = buffer.getvalue()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)


def coloured_square(rng, size=24):
    return rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)
