"""Procedural scenes for the embedded dataset: the class is in the shape.

Every scene has a textured gradient background, a few distractor strokes and one
or two objects of the class shape, with colour, size, position, rotation, fill
style and aspect drawn at random independently of the class. So no single pixel,
global colour or size separates the classes; a model has to see outlines and
corners. Shapes are rendered from signed distances so their edges are
anti-aliased like photographs, not aliased like masks.
"""

from __future__ import annotations

import math

import numpy as np

SHAPE_NAMES = ("ellipse", "rectangle", "triangle", "star", "cross")

# Objects must stand out from the background under them: this is the smallest
# RGB distance accepted between an object's colour and the local background.
_MIN_CONTRAST = 90.0


def draw_scene(rng: np.random.Generator, shape: str, height: int, width: int) -> np.ndarray:
    """Returns a (height, width, 3) uint8 scene holding one or two `shape`s."""
    if shape not in SHAPE_NAMES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPE_NAMES)}")
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    canvas = background(rng, ys, xs)
    side = min(height, width)
    for _ in range(rng.integers(2, 6)):
        _paint_stroke(rng, canvas, ys, xs, side)
    for _ in range(rng.integers(1, 3)):
        _paint_object(rng, canvas, ys, xs, shape, side)
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(3.0, 9.0))
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def background(rng, ys, xs):
    """A textured colour gradient over the (ys, xs) pixel grid: float32, unclipped."""
    height, width = ys.shape
    start, end = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = xs * math.cos(angle) + ys * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    canvas = start + ramp[..., None] * (end - start)
    return canvas + _smooth_noise(rng, height, width, cells=int(rng.integers(3, 8)), amplitude=30.0)


def _smooth_noise(rng, height, width, cells, amplitude):
    """Low-frequency colour texture: a coarse random grid, bilinearly upsampled."""
    grid = rng.normal(0.0, amplitude, (cells, cells, 3)).astype(np.float32)
    return np.einsum(
        "hc,cdk,wd->hwk", _linear_weights(height, cells), grid, _linear_weights(width, cells), optimize=True
    )


def _linear_weights(size, cells):
    """(size, cells) matrix that interpolates `cells` knots linearly onto `size` pixels."""
    position = np.linspace(0, cells - 1, size, dtype=np.float32)
    knots = np.arange(cells, dtype=np.float32)
    return np.maximum(0.0, 1.0 - np.abs(position[:, None] - knots[None, :]))


def _paint_stroke(rng, canvas, ys, xs, side):
    """A long thin line: clutter that belongs to no class."""
    height, width = ys.shape
    y0, y1 = rng.uniform(0, height, 2)
    x0, x1 = rng.uniform(0, width, 2)
    half_thickness = rng.uniform(0.005, 0.015) * side
    pad = half_thickness + 2
    box = _box(min(y0, y1) - pad, max(y0, y1) + pad, min(x0, x1) - pad, max(x0, x1) + pad, height, width)
    dy, dx = y1 - y0, x1 - x0
    length_sq = max(dy * dy + dx * dx, 1e-6)
    py, px = ys[box] - y0, xs[box] - x0
    t = np.clip((py * dy + px * dx) / length_sq, 0.0, 1.0)
    distance = np.hypot(py - t * dy, px - t * dx) - half_thickness
    _blend(canvas[box], _coverage(distance), rng.uniform(0, 255, 3))


def _box(top, bottom, left, right, height, width):
    """The pixel window [top, bottom) x [left, right), clipped to the image."""
    return (slice(int(max(top, 0)), int(min(bottom, height))), slice(int(max(left, 0)), int(min(right, width))))


def _paint_object(rng, canvas, ys, xs, shape, side):
    height, width = ys.shape
    radius = rng.uniform(0.14, 0.3) * side
    cy = rng.uniform(radius * 0.8, height - radius * 0.8)
    cx = rng.uniform(radius * 0.8, width - radius * 0.8)
    # Work inside the object's bounding box only: most of the image is untouched.
    margin = radius * 1.2 + 2
    box = _box(cy - margin, cy + margin, cx - margin, cx + margin, height, width)
    local_y, local_x = ys[box] - cy, xs[box] - cx
    angle = rng.uniform(0, 2 * math.pi)
    cos, sin = math.cos(angle), math.sin(angle)
    u = local_x * cos + local_y * sin
    v = -local_x * sin + local_y * cos
    distance = _SHAPES[shape](rng, u, v, radius)
    if rng.uniform() < 0.25:  # outlined instead of filled
        thickness = rng.uniform(0.08, 0.16) * radius
        coverage = _coverage(distance) * _coverage(-distance - thickness)
    else:
        coverage = _coverage(distance)
    under = canvas[int(cy), int(cx)]
    colour = rng.uniform(0, 255, 3)
    for _ in range(20):
        if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
            break
        colour = rng.uniform(0, 255, 3)
    _blend(canvas[box], coverage, colour)


def _coverage(signed_distance):
    """Fraction of each pixel inside the shape: a one-pixel anti-aliased edge."""
    return np.clip(0.5 - signed_distance, 0.0, 1.0)


def _blend(region, coverage, colour):
    region += coverage[..., None].astype(np.float32) * (np.asarray(colour, np.float32) - region)


def _convex_polygon(u, v, vertices):
    """Signed distance (approximate outside corners) to a counter-clockwise convex polygon."""
    distance = None
    count = len(vertices)
    for i in range(count):
        (ax, ay), (bx, by) = vertices[i], vertices[(i + 1) % count]
        nx, ny = by - ay, ax - bx  # outward normal of a counter-clockwise edge
        norm = math.hypot(nx, ny)
        edge = ((u - ax) * nx + (v - ay) * ny) / norm
        distance = edge if distance is None else np.maximum(distance, edge)
    return distance


def _regular_points(count, radius, phase=0.0):
    return [
        (radius * math.cos(phase + 2 * math.pi * k / count), radius * math.sin(phase + 2 * math.pi * k / count))
        for k in range(count)
    ]


def _ellipse(rng, u, v, radius):
    minor = radius * rng.uniform(0.55, 1.0)
    return (np.hypot(u / radius, v / minor) - 1.0) * minor


def _rectangle(rng, u, v, radius):
    half_w, half_h = radius * 0.85, radius * 0.85 * rng.uniform(0.55, 1.0)
    return _convex_polygon(u, v, [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)])


def _triangle(rng, u, v, radius):
    corners = [
        (r * math.cos(a), r * math.sin(a))
        for r, a in zip(
            radius * rng.uniform(0.85, 1.1, 3),
            np.array([0.0, 2.0944, 4.1888]) + rng.uniform(-0.2, 0.2, 3),
        )
    ]
    return _convex_polygon(u, v, corners)


def _star(rng, u, v, radius):
    inner = radius * rng.uniform(0.38, 0.5)
    outer_points = _regular_points(5, radius)
    inner_points = _regular_points(5, inner, phase=math.pi / 5)
    distance = _convex_polygon(u, v, inner_points)
    for k in range(5):
        arm = [inner_points[k - 1], outer_points[k], inner_points[k]]
        distance = np.minimum(distance, _convex_polygon(u, v, arm))
    return distance


def _cross(rng, u, v, radius):
    arm = radius * rng.uniform(0.22, 0.34)
    length = radius * 0.95
    horizontal = [(-length, -arm), (length, -arm), (length, arm), (-length, arm)]
    vertical = [(-arm, -length), (arm, -length), (arm, length), (-arm, length)]
    return np.minimum(_convex_polygon(u, v, horizontal), _convex_polygon(u, v, vertical))


_SHAPES = {
    "ellipse": _ellipse,
    "rectangle": _rectangle,
    "triangle": _triangle,
    "star": _star,
    "cross": _cross,
}
