"""Image folders for tests, written as PNG files."""

from __future__ import annotations

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
