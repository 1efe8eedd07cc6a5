"""The memory budget: sizes, container limits read from (fake) cgroup files, the machine's
available memory, and what the run's stores may take of it."""

import os

import pytest

from tfpipe import memory
from tfpipe.errors import TfpipeError

GiB = 2**30


@pytest.mark.parametrize(
    "text, size",
    [("256MB", 256 * 2**20), ("8GB", 8 * GiB), ("1.5g", int(1.5 * GiB)), ("512MiB", 512 * 2**20), ("1000", 1000)],
)
def test_sizes_count_in_1024s(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "12x", "-1GB", "1e9", "GB"])
def test_a_size_that_is_not_one_says_what_to_give(text):
    with pytest.raises(TfpipeError, match="is not a size: give e.g. 256MB"):
        memory.parse_size(text)


def test_a_zero_size_is_refused():
    with pytest.raises(TfpipeError, match="must be more than 0 bytes"):
        memory.parse_size("0")


def _fake_proc(tmp_path, *, cgroup_lines, available_kib=20 * 2**20, rss_kib=2**20):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("\n".join(cgroup_lines) + "\n")
    (proc / "meminfo").write_text(f"MemTotal: 24000000 kB\nMemFree: 1000 kB\nMemAvailable: {available_kib} kB\n")
    (proc / "self" / "status").write_text(f"Name: python\nVmRSS: {rss_kib} kB\n")
    return str(proc)


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_a_cgroup_v2_limit_is_the_budget_less_the_margin(tmp_path):
    root = tmp_path / "cgroup"
    _write(str(root / "memory.max"), "max\n")  # the root: no limit
    _write(str(root / "kubepods" / "pod1" / "memory.max"), f"{4 * GiB}\n")
    proc = _fake_proc(tmp_path, cgroup_lines=["0::/kubepods/pod1"])
    budget = memory.MemoryBudget.detect(cgroup_root=str(root), proc=proc)
    assert budget.bytes == 4 * GiB - memory.MARGIN_BYTES
    assert budget.origin.startswith("the container's limit (4.0 GiB, cgroup v2 ")
    assert budget.describe().startswith("Memory budget for data: 2.0 GiB, the container's limit (4.0 GiB")


def test_a_parent_cgroup_limit_binds_the_child(tmp_path):
    root = tmp_path / "cgroup"
    _write(str(root / "a" / "memory.max"), f"{3 * GiB}\n")
    _write(str(root / "a" / "b" / "memory.max"), "max\n")
    proc = _fake_proc(tmp_path, cgroup_lines=["0::/a/b"])
    assert memory.container_limit(str(root), os.path.join(proc, "self", "cgroup"))[0] == 3 * GiB


def test_a_cgroup_v1_limit_is_read_and_its_no_limit_value_ignored(tmp_path):
    root = tmp_path / "cgroup"
    _write(str(root / "memory" / "memory.limit_in_bytes"), "9223372036854771712\n")  # v1's "none"
    _write(str(root / "memory" / "docker" / "abc" / "memory.limit_in_bytes"), f"{6 * GiB}\n")
    proc = _fake_proc(tmp_path, cgroup_lines=["4:memory:/docker/abc", "3:cpuset:/docker/abc", "0::/"])
    budget = memory.MemoryBudget.detect(cgroup_root=str(root), proc=proc)
    assert budget.bytes == 6 * GiB - memory.MARGIN_BYTES and "cgroup v1 " in budget.origin


def test_without_a_limit_the_available_memory_and_what_the_process_holds_decide(tmp_path):
    root = tmp_path / "cgroup"
    _write(str(root / "memory" / "memory.limit_in_bytes"), "9223372036854771712\n")
    proc = _fake_proc(tmp_path, cgroup_lines=["4:memory:/"], available_kib=5 * 2**20, rss_kib=2**20)
    budget = memory.MemoryBudget.detect(cgroup_root=str(root), proc=proc)
    assert budget.bytes == 6 * GiB - memory.MARGIN_BYTES  # 5 GiB available + 1 GiB held
    assert budget.origin.startswith("this machine's available memory (6.0 GiB, MemAvailable)")


def test_the_lower_of_limit_and_available_memory_wins(tmp_path):
    root = tmp_path / "cgroup"
    _write(str(root / "memory.max"), f"{16 * GiB}\n")
    proc = _fake_proc(tmp_path, cgroup_lines=["0::/"], available_kib=3 * 2**20, rss_kib=0)
    assert memory.MemoryBudget.detect(cgroup_root=str(root), proc=proc).bytes == 3 * GiB - memory.MARGIN_BYTES


def test_a_container_smaller_than_the_margin_leaves_no_budget(tmp_path):
    root = tmp_path / "cgroup"
    _write(str(root / "memory.max"), f"{GiB}\n")
    proc = _fake_proc(tmp_path, cgroup_lines=["0::/"])
    assert memory.MemoryBudget.detect(cgroup_root=str(root), proc=proc).bytes == 0


def test_the_flag_wins_over_what_the_machine_says(tmp_path):
    budget = memory.MemoryBudget.detect("256MB", proc=_fake_proc(tmp_path, cgroup_lines=["0::/"]))
    assert budget == memory.MemoryBudget(256 * 2**20, "--memory_budget=256MB")


def test_the_ledger_counts_what_stores_take():
    ledger = memory.Ledger(memory.MemoryBudget(1000, "test"))
    assert ledger.fits(1000) and not ledger.fits(1001)
    ledger.take("images", 600)
    assert ledger.left == 400 and ledger.fits(400) and not ledger.fits(401)
