import gc
import os
import tempfile

import pytest

from tests.cpu_report import pytest_runtest_protocol, pytest_terminal_summary  # noqa: F401  (hooks, opt-in)
from tests.check_cache import _templates_rendered_once_per_session  # noqa: F401  (autouse, session)
from tests.cli_once import _dunctl_commands_built_once_per_session  # noqa: F401  (autouse, session)
from tests.servers import http_receiver, smtp_server  # noqa: F401  (fixtures)

SHARED_MEMORY = "/dev/shm"


def pytest_configure(config):
    """Tests' files (ledgers, outboxes) on tmpfs where the machine has one, unless --basetemp says otherwise.
    They are still real files: SQLite, flock and rename behave the same; only the fsync of every durable commit
    is free instead of a wait on the disk (two tick test files on this 2-core box: system CPU 1.3-1.5 s -> 0.6 s,
    wall 34-83 s -> 24 s).
    pytest keeps the last three runs' directories, a few hundred MB at most."""
    if config.option.basetemp is None and _roomy(SHARED_MEMORY):
        tempfile.tempdir = SHARED_MEMORY
    # The dunctl processes tests start (crashes, signals, locks) load their bytecode from a cache outside the
    # source tree instead of compiling every dunctl module in every process when the environment forbids
    # writing bytecode (this project's sessions do): 30-50 ms of CPU per process.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.setdefault("PYTHONPYCACHEPREFIX", os.path.join(tempfile.gettempdir(), f"dunctl-pycache-{os.getuid()}"))
    # Compiled templates (dunctl/messages/compiled.py) in the tests' own cache, never the developer's ~/.cache: the
    # starter templates every test writes compile once per run instead of once per test.
    os.environ["DUNCTL_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"dunctl-cache-{os.getuid()}")


def pytest_collection_finish(session):
    """What collection loaded (dunctl, typer, rich, stripe, jinja2, babel, the test modules: some 80,000 objects)
    lives to the end: frozen, the garbage collector stops scanning it on each of its full passes (2.65-3.03 ->
    2.13-2.49 s of collecting over 203 tests of eight tick and check files, measured through gc.callbacks).
    Objects a test makes are collected as before."""
    gc.collect()
    gc.freeze()


def _roomy(directory: str) -> bool:
    """Writable, with room for three runs' files: a container's /dev/shm is often 64 MB, and a full one would
    fail tests for a reason of its own."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return os.access(directory, os.W_OK) and stats.f_bavail * stats.f_frsize >= 2 * 1024 ** 3


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    """No test sees the developer's real keys or config."""
    for name in ("STRIPE_API_KEY", "DUNCTL_CONFIG", "SLACK_WEBHOOK_URL", "DUNCTL_WEBHOOK_SECRET",
                 "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "SMTP_USERNAME", "SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
