"""How fast a model predicts: throughput of predict against the model alone, and the latency
of one image per call (bin/bench_predict reads the flags and prints)."""

from __future__ import annotations

import time

import numpy as np

from tfpipe.bench.pipelines import cores
from tfpipe.inference import predict


def measure(
    trained: predict.TrainedModel, paths: list[str], batch_size: int, repeats: int, latency_images: int
) -> dict:
    """images/s of predict and of the model alone on decoded batches (`repeats` alternated
    passes each, after warm-ups), and ms per image over the first `latency_images` images
    one per call."""
    decoded = np.concatenate([images for _, images in predict.decoded_batches(paths, trained.preprocessing, batch_size)])
    batches = [decoded[i : i + batch_size] for i in range(0, len(decoded), batch_size)]
    predict.predict(trained, paths[:batch_size], batch_size=batch_size)  # warm-ups
    trained.outputs_of(batches[0])
    rates = {"predict": [], "direct": []}
    for _ in range(repeats):  # alternated, so a slow spell of the machine hits both sides
        started = time.perf_counter()
        rows = predict.predict(trained, paths, batch_size=batch_size)
        rates["predict"].append(sum(row.ok for row in rows) / (time.perf_counter() - started))
        started = time.perf_counter()
        for batch in batches:
            trained.outputs_of(batch)
        rates["direct"].append(len(decoded) / (time.perf_counter() - started))
    singles = decoded[:latency_images]
    trained.outputs_of(singles[:1])
    seconds = []
    for image in singles:
        started = time.perf_counter()
        trained.outputs_of(image[np.newaxis])
        seconds.append(time.perf_counter() - started)
    return {
        "model": trained.path,
        "runtime": trained.runtime,
        "image_size": trained.image_size,
        "images": len(decoded),
        "batch_size": batch_size,
        "cores": cores(),
        "predict": rates["predict"],
        "direct": rates["direct"],
        "ratio": float(np.median(rates["predict"]) / np.median(rates["direct"])),
        "latency_ms": {
            "images": len(seconds),
            "median": float(np.median(seconds) * 1e3),
            "p90": float(np.percentile(seconds, 90) * 1e3),
        },
    }
