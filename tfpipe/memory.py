"""How much memory a run's data may hold: one budget that every store sizes itself against.

The stores sized by the data (the decoded image cache, the shuffle buffer of encoded images,
the stored features, the cached activations) ask this module before they allocate. The
budget is, by default, the memory this process may use, the lower of

  - the container's limit: cgroup v2 `memory.max`, or cgroup v1 `memory.limit_in_bytes`, of
    this process's cgroup and its parents ("max", or a number near 2^63, means none); inside
    Docker, Kubernetes or a CI runner this is what the kernel kills at, while
    os.sysconf("SC_PHYS_PAGES") and TensorFlow's own figures report the host;
  - the machine's available memory (`MemAvailable` in /proc/meminfo) plus what this process
    already holds (its resident set, which MemAvailable has already subtracted),

less MARGIN_BYTES for TensorFlow, the model and its training step (measured: BUILD_NOTES.md,
"The memory budget"). `--memory_budget=SIZE` sets it instead.
"""

from __future__ import annotations

import dataclasses
import os
import re

from tfpipe.errors import TfpipeError

# What a default run holds besides its data: TensorFlow and its libraries, EfficientNet-Lite0 and
# its training step at 224 px, batch 32 (peak RSS of such a run with --cache=none on a tiny
# split: BUILD_NOTES.md, "The memory budget").
MARGIN_BYTES = 2 * 2**30
# cgroup v1 writes "no limit" as the largest page-aligned int64; anything this large is none.
_NO_LIMIT = 2**60
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
FLAG = "memory_budget"


def parse_size(text: str, *, flag: str = FLAG) -> int:
    """'256MB', '8GB', '1.5g', '512MiB', '1000000' -> bytes. Units count in 1024s, as memory is counted."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt](?:i?b)?|b)?", str(text).strip(), re.IGNORECASE)
    if not match:
        raise TfpipeError(f"--{flag}={text!r} is not a size: give e.g. 256MB, 8GB or a number of bytes")
    value = float(match.group(1)) * _UNITS[(match.group(2) or "")[:1].lower()]
    if value < 1:
        raise TfpipeError(f"--{flag}={text!r} must be more than 0 bytes")
    return int(value)


def format_size(size: float) -> str:
    """Bytes in the unit a reader takes in at a glance: '812 MiB', '2.4 GiB'."""
    if size >= 2**30:
        return f"{size / 2**30:.1f} GiB"
    if size >= 2**20:
        return f"{size / 2**20:,.0f} MiB"
    return f"{size / 2**10:,.0f} KiB"


def container_limit(cgroup_root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup"):
    """(bytes, where it was read) of the tightest memory limit over this process's cgroup and its
    parents, or None when there is none (or no cgroup file system)."""
    limits = []
    for version, relative in _cgroup_paths(proc_cgroup):
        if version == 2:
            folder, name = cgroup_root, "memory.max"
        else:
            folder, name = os.path.join(cgroup_root, "memory"), "memory.limit_in_bytes"
        # From the process's own cgroup up to the root: a parent's limit binds its children too.
        parts = [part for part in relative.split("/") if part]
        for depth in range(len(parts), -1, -1):
            path = os.path.join(folder, *parts[:depth], name)
            value = _read_limit(path)
            if value is not None:
                limits.append((value, f"cgroup v{version} {path}"))
    return min(limits) if limits else None


def _cgroup_paths(proc_cgroup: str) -> list[tuple[int, str]]:
    """(cgroup version, path below the hierarchy's root) of this process's memory cgroups."""
    try:
        with open(proc_cgroup) as lines:
            entries = [line.rstrip("\n").split(":", 2) for line in lines]
    except OSError:
        return [(2, "/"), (1, "/")]  # no /proc: try the roots
    paths = []
    for entry in entries:
        if len(entry) != 3:
            continue
        _, controllers, path = entry
        if controllers == "":
            paths.append((2, path))
        elif "memory" in controllers.split(","):
            paths.append((1, path))
    return paths


def _read_limit(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < _NO_LIMIT else None


def available_memory(meminfo: str = "/proc/meminfo", status: str = "/proc/self/status") -> int | None:
    """MemAvailable plus this process's resident set: what this process could grow to; None without /proc."""
    available = _field_kib(meminfo, "MemAvailable")
    if available is None:
        return None
    return (available + (_field_kib(status, "VmRSS") or 0)) * 1024


def _field_kib(path: str, field: str) -> int | None:
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclasses.dataclass(frozen=True)
class MemoryBudget:
    """Bytes the run's data may hold, and a line saying where the figure came from."""

    bytes: int
    origin: str

    @classmethod
    def detect(
        cls,
        requested: str | None = None,
        *,
        cgroup_root: str = "/sys/fs/cgroup",
        proc: str = "/proc",
    ) -> MemoryBudget:
        """--memory_budget when given, else the process's memory (module docstring) less MARGIN_BYTES."""
        if requested:
            return cls(parse_size(requested), f"--{FLAG}={requested}")
        candidates = []
        limit = container_limit(cgroup_root, os.path.join(proc, "self", "cgroup"))
        if limit is not None:
            candidates.append((limit[0], f"the container's limit ({format_size(limit[0])}, {limit[1]})"))
        available = available_memory(os.path.join(proc, "meminfo"), os.path.join(proc, "self", "status"))
        if available is not None:
            candidates.append((available, f"this machine's available memory ({format_size(available)}, MemAvailable)"))
        if not candidates:  # no /proc (not Linux): the physical memory, which is all there is to go on
            physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            candidates.append((physical, f"this machine's memory ({format_size(physical)})"))
        total, where = min(candidates)
        return cls(
            max(total - MARGIN_BYTES, 0),
            f"{where} less {format_size(MARGIN_BYTES)} for TensorFlow and the model (--{FLAG} sets it)",
        )

    def describe(self) -> str:
        return f"Memory budget for data: {format_size(self.bytes)}, {self.origin}"


class Ledger:
    """What the run's stores have taken of a budget: each asks fits() before it allocates."""

    def __init__(self, budget: MemoryBudget):
        self.budget = budget
        self.taken: dict[str, int] = {}

    @property
    def left(self) -> int:
        return self.budget.bytes - sum(self.taken.values())

    def fits(self, size: int) -> bool:
        return size <= self.left

    def take(self, what: str, size: int) -> None:
        self.taken[what] = self.taken.get(what, 0) + size
