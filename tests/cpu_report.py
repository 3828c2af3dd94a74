"""CPU per test, opt-in: `DUNCTL_TEST_CPU=1 pytest ...` prints the 30 tests and the 20 files that cost the most
user+system CPU, this process's and its children's (dunctl processes, browsers), over setup, call and teardown.

Wall time (`--durations`) misleads on a shared 2-core machine: a test waiting for a busy core looks slow, and a
test whose work runs in a child process looks cheap to a profiler. The suite's budget is CPU (issue #25).
A shared fixture's set-up is charged to the first test that uses it. `DUNCTL_TEST_CPU=path.tsv` also writes every
test's figures to that file, for sorting and comparing runs."""

from __future__ import annotations

import os
import resource
from collections import defaultdict

import pytest

_ENV = "DUNCTL_TEST_CPU"
_costs: dict[str, float] = {}


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not os.environ.get(_ENV):
        yield
        return
    before = _cpu_seconds()
    yield
    _costs[item.nodeid] = _cpu_seconds() - before


def pytest_terminal_summary(terminalreporter):
    setting = os.environ.get(_ENV)
    if not setting or not _costs:
        return
    write = terminalreporter.write_line
    by_file: dict[str, float] = defaultdict(float)
    for nodeid, seconds in _costs.items():
        by_file[nodeid.split("::")[0]] += seconds
    terminalreporter.section(f"CPU (user+sys, with children): {sum(_costs.values()):.1f} s in {len(_costs)} tests")
    for nodeid, seconds in sorted(_costs.items(), key=lambda kv: -kv[1])[:30]:
        write(f"{seconds:7.2f} s  {nodeid}")
    write("by file:")
    for path, seconds in sorted(by_file.items(), key=lambda kv: -kv[1])[:20]:
        write(f"{seconds:7.2f} s  {path}")
    if setting != "1":
        with open(setting, "w") as out:
            out.writelines(f"{seconds:.3f}\t{nodeid}\n" for nodeid, seconds in _costs.items())
