"""Fractals from iterated function systems (IFS): the pictures of tfpipe_fractals.

Formula-driven pretraining (Kataoka et al., "Pre-training without Natural
Images", IJCV 2021) makes one class of each random IFS and learns to tell the
classes apart; Anderson & Farrell ("Improving Fractal Pre-training", WACV 2022)
showed that systems sampled with a bounded sigma-factor, drawn in colour over
varied backgrounds, pretrain features that transfer. This module follows them:

- A system is 2 to 4 affine maps w(x) = W x + b. Each W is built from its
  singular value decomposition, W = R(theta) diag(s1, s2) R(phi) diag(d1, d2)
  with d = +-1, and the singular values are scaled so that the sigma-factor
  sum(s1 + 2 s2) lies in [(5 + N) / 2, (6 + N) / 2] for N maps: smaller gives
  dust, larger fills the plane; in between lie the well-formed shapes.
- A system whose attractor covers too little of its bounding box (a line, a
  few dots) is rejected, so every class has a recognisable shape.
- The attractor is drawn by the chaos game, many particles at once; each
  point takes the colour of the map that placed it, so the self-similar parts
  show.
- An instance of a class is its attractor under a random rotation, scale,
  aspect, position and mirror, in random colours over a random background
  (shared with tfpipe_shapes' drawing): the class is in the shape alone.
"""

from __future__ import annotations

import math

import numpy as np

from tfpipe.data.builders.drawing import background

# Particles run in parallel; the first steps are dropped while they fall onto the attractor.
_PARTICLES = 384
_STEPS = 48
_BURN_IN = 8
# An attractor must cover at least this share of a 32 x 32 grid over its bounding box.
_MIN_FILL = 0.12
# Drawing at twice the size, then averaging 2 x 2 pixels, anti-aliases the thin parts.
_SUPERSAMPLE = 2


def sample_system(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random IFS with a well-formed attractor: (maps [N, 2, 3], probabilities [N])."""
    for _ in range(1000):
        maps = _random_maps(rng, int(rng.integers(2, 5)))
        points, _ = chaos_game(rng, maps, _probabilities(maps), particles=256, steps=24)
        if _fill(points) >= _MIN_FILL:
            return maps, _probabilities(maps)
    raise RuntimeError("no well-formed IFS found in 1,000 tries")  # never seen: about 1 in 3 qualifies


def _random_maps(rng, count):
    sigma_factor = rng.uniform((5 + count) / 2, (6 + count) / 2)
    while True:
        singular = np.sort(rng.uniform(0.05, 1.0, (count, 2)), axis=1)[:, ::-1]  # s1 >= s2
        singular *= sigma_factor / (singular[:, 0] + 2 * singular[:, 1]).sum()
        if singular.max() < 1.0:  # every map contracts: the attractor exists
            break
    maps = np.empty((count, 2, 3))
    for k, (s1, s2) in enumerate(singular):
        theta, phi = rng.uniform(0, 2 * math.pi, 2)
        mirror = np.diag(rng.choice([-1.0, 1.0], 2))
        maps[k, :, :2] = _rotation(theta) @ np.diag([s1, s2]) @ _rotation(phi) @ mirror
        maps[k, :, 2] = rng.uniform(-1.0, 1.0, 2)
    return maps


def _rotation(angle):
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin], [sin, cos]])


def _probabilities(maps):
    # Each map is chosen in proportion to the area it maps to, so the attractor fills evenly.
    area = np.abs(np.linalg.det(maps[:, :, :2])) + 1e-3
    return area / area.sum()


def chaos_game(rng, maps, probabilities, particles=_PARTICLES, steps=_STEPS):
    """Points on the attractor [M, 2] and the index of the map that placed each [M]."""
    position = rng.uniform(-1.0, 1.0, (particles, 2))
    choices = rng.choice(len(maps), size=(steps, particles), p=probabilities)
    linear, shift = maps[:, :, :2], maps[:, :, 2]
    points = []
    for chosen in choices:
        position = np.einsum("pij,pj->pi", linear[chosen], position) + shift[chosen]
        points.append(position)
    return np.concatenate(points[_BURN_IN:]), choices[_BURN_IN:].reshape(-1)


def _fill(points, grid=32):
    low, high = points.min(0), points.max(0)
    if not np.all(np.isfinite([low, high])) or np.any(high - low < 1e-6):
        return 0.0
    cells = np.clip(((points - low) / (high - low) * (grid - 1)).astype(int), 0, grid - 1)
    return len(np.unique(cells[:, 0] * grid + cells[:, 1])) / grid**2


def draw_instance(rng: np.random.Generator, maps: np.ndarray, probabilities: np.ndarray, size: int) -> np.ndarray:
    """One (size, size, 3) uint8 picture of the system's attractor, placed and coloured at random."""
    points, placed_by = chaos_game(rng, maps, probabilities)
    canvas_size = size * _SUPERSAMPLE
    ys, xs = np.mgrid[0:canvas_size, 0:canvas_size].astype(np.float32)
    canvas = background(rng, ys, xs)
    pixels = _place(rng, points, canvas_size)
    inside = np.all((pixels >= 0) & (pixels < canvas_size), axis=1)
    pixels, placed_by = pixels[inside], placed_by[inside]
    flat = pixels[:, 0] * canvas_size + pixels[:, 1]
    colours = _map_colours(rng, len(maps), canvas)
    hits = np.bincount(flat, minlength=canvas_size**2).astype(np.float32)
    painted = np.stack(
        [np.bincount(flat, weights=colours[placed_by, c], minlength=canvas_size**2) for c in range(3)],
        axis=-1,
    )
    colour = painted / np.maximum(hits, 1.0)[:, None]
    # A pixel hit a few times is covered: points are dense on the attractor.
    coverage = (1.0 - np.exp(-hits / 2.0))[:, None]
    flat_canvas = canvas.reshape(-1, 3)
    flat_canvas += coverage * (colour - flat_canvas)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(2.0, 6.0))
    small = canvas.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def _place(rng, points, canvas_size):
    """Attractor points -> integer (row, column) pixels: rotated, scaled, stretched, mirrored, moved."""
    centred = points - (points.min(0) + points.max(0)) / 2
    angle = rng.uniform(0, 2 * math.pi)
    stretch = rng.uniform(0.8, 1.25)
    transform = _rotation(angle) @ np.diag([stretch, 1 / stretch]) @ np.diag([rng.choice([-1.0, 1.0]), 1.0])
    turned = centred @ transform.T
    extent = max(float(np.abs(turned).max()), 1e-6)
    radius = rng.uniform(0.3, 0.46) * canvas_size  # half the object's size
    centre = canvas_size / 2 + rng.uniform(-1, 1, 2) * (canvas_size / 2 - radius)
    return np.floor(turned / extent * radius + centre).astype(np.int64)


def _map_colours(rng, count, canvas):
    """A colour per map, each far enough from the mean background to stand out."""
    mean_background = canvas.reshape(-1, 3).mean(0)
    colours = rng.uniform(0, 255, (count, 3))
    for k in range(count):
        for _ in range(20):
            if np.linalg.norm(colours[k] - mean_background) >= 90.0:
                break
            colours[k] = rng.uniform(0, 255, 3)
    return colours
