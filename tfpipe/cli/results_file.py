"""The benchmark tools' --json: their results as a JSON file, and the line that says where."""

from __future__ import annotations

import json


def write(path: str | None, results: dict) -> None:
    """Writes `results` to `path` (nothing when None) and prints where."""
    if not path:
        return
    with open(path, "w") as out:
        json.dump(results, out, indent=2)
    print(f"Wrote {path}")
