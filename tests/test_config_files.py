"""Issue 20 (smaller): a FIFO as the config hung `dunctl check` (and every cron tick after it) until some writer
came, and `-c /dev/zero` read until memory ran out. Configs and sequence files are read only when they are
regular files, and at most MAX_YAML_BYTES of them. Run as separate processes, bounded in time and memory, so the
old behaviour fails the test instead of hanging or starving the test run."""

import os
import resource
import subprocess
import sys

from dunctl.config import MAX_YAML_BYTES
from tests.helpers import starter


def dunctl(config, *args):
    def bounded():   # 1 GiB of address space: /dev/zero read whole would fail fast rather than swap
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    try:
        return subprocess.run([sys.executable, "-m", "dunctl", "-c", str(config), *args], capture_output=True,
                              text=True, timeout=30, preexec_fn=bounded, env={**os.environ, "COLUMNS": "160"})
    except subprocess.TimeoutExpired:
        raise AssertionError("dunctl hung on the config") from None


def test_a_fifo_as_config_is_refused_at_once(tmp_path):
    fifo = tmp_path / "dunctl.yaml"
    os.mkfifo(fifo)
    result = dunctl(fifo, "check")
    assert result.returncode == 2, result.stderr
    assert str(fifo) in result.stderr and "FIFO" in result.stderr and "Traceback" not in result.stderr


def test_dev_zero_as_config_is_refused_without_reading_it(tmp_path):
    result = dunctl("/dev/zero", "tick")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "/dev/zero" in result.stderr and "not a regular file" in result.stderr


def test_a_fifo_in_the_sequences_directory_is_a_problem_named_by_its_path(tmp_path):
    config = starter(tmp_path)
    os.mkfifo(tmp_path / "sequences" / "pipe.yaml")
    result = dunctl(config, "check")
    assert result.returncode == 2, result.stderr
    assert "sequences/pipe.yaml" in result.stderr and "FIFO" in result.stderr


def test_a_huge_config_is_refused_after_reading_only_the_cap(tmp_path):
    config = starter(tmp_path)
    with open(config, "ab") as handle:   # a sparse file far beyond the cap: reading it whole would take minutes
        handle.truncate(64 * MAX_YAML_BYTES * 1024)
    result = dunctl(config, "check")
    assert result.returncode == 2, result.stderr
    assert f"more than {MAX_YAML_BYTES:,} bytes" in result.stderr
