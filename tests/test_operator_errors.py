"""Operator mistakes end in one line naming the file and what to do, exit 2, nothing changed; never a traceback.
And only `init` or an explicit --new-ledger creates a ledger (issue 12 item 3)."""

import atexit
import contextlib
import functools
import gc
import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from dunctl.ledger import Ledger
from tests.helpers import at, cli, failed_invoice, open_engine_ledger, seed, starter, unavailable

NOBODY = 65534


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(result) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("Error: ")
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error")]) == 1


def seeded(tmp_path: Path, invoices: int = 3) -> Path:
    """A ledger with open cases, all of it in the main file (no write-ahead log left behind): a copy of one made
    once per size (seeding and a tick cost 0.2-0.4 s of CPU; nine tests damage or lock a copy of their own)."""
    config = starter(tmp_path, ledger=False)
    shutil.copyfile(_seeded_ledger(invoices), tmp_path / "dunctl.db")
    (tmp_path / "dunctl.db").chmod(0o600)       # as dunctl makes it
    return config


@functools.lru_cache(maxsize=None)
def _seeded_ledger(invoices: int) -> Path:
    home = Path(tempfile.mkdtemp(prefix="dunctl-seeded-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    config = starter(home)
    ledger = open_engine_ledger(config)
    seed(ledger, *[failed_invoice(f"in_{i}", customer_id=f"cus_{i}") for i in range(invoices)])
    ledger.close()
    assert cli(config, "tick", "--no-sync", "--now", at("31m").isoformat()).exit_code == 0
    gc.collect()  # the in-process command's connection
    conn = sqlite3.connect(home / "dunctl.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    return home / "dunctl.db"


# -- a missing, empty or foreign ledger ------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["tick", "--no-sync"], ["sync"], ["status"]])
def test_a_missing_ledger_is_never_created_by_tick_sync_or_status(tmp_path, command):
    config = starter(tmp_path, ledger=False)
    result = cli(config, *command, env={"STRIPE_API_KEY": "sk_test_123"})
    one_line_error(result)
    assert f"no ledger at {tmp_path / 'dunctl.db'}" in result.stderr
    assert "dunctl init" in result.stderr and "--new-ledger" in result.stderr and "backup" in result.stderr
    assert not (tmp_path / "dunctl.db").exists()


@pytest.mark.parametrize("command", [["tick", "--no-sync"], ["sync"], ["status"]])
def test_a_zero_byte_ledger_is_refused_and_left_alone(tmp_path, command):
    config = starter(tmp_path, ledger=False)
    (tmp_path / "dunctl.db").touch()
    result = cli(config, *command, env={"STRIPE_API_KEY": "sk_test_123"})
    one_line_error(result)
    assert "is empty (0 bytes)" in result.stderr and "restore the ledger from your last backup" in result.stderr
    assert (tmp_path / "dunctl.db").stat().st_size == 0
    if command[0] == "tick":  # asked for explicitly, an empty file becomes a new ledger
        assert cli(config, *command, "--new-ledger").exit_code == 0
        assert Ledger.open_existing(tmp_path / "dunctl.db").cases.listed() == []


def test_new_ledger_starts_one_on_purpose_and_an_empty_ledger_is_normal(tmp_path):
    config = starter(tmp_path, ledger=False)
    started = cli(config, "tick", "--no-sync", "--new-ledger", "--now", at("1h").isoformat())
    assert started.exit_code == 0, started.output
    assert Ledger.open_existing(tmp_path / "dunctl.db").cases.listed() == []
    again = cli(config, "tick", "--no-sync", "--now", at("2h").isoformat())
    assert again.exit_code == 0 and again.output == ""
    status = cli(config, "status")
    assert status.exit_code == 0 and "0 open cases" in status.stdout


def test_init_creates_the_ledger_with_its_schema(tmp_path):
    result = cli(tmp_path / "unused.yaml", "init", str(tmp_path / "billing"))
    assert result.exit_code == 0
    assert f"created the ledger {tmp_path / 'billing' / 'dunctl.db'}" in result.stdout.replace("\n", "")
    assert cli(tmp_path / "billing" / "dunctl.yaml", "tick", "--no-sync").exit_code == 0


def test_a_foreign_owned_ledger_is_refused_naming_its_owner(tmp_path):
    if os.geteuid() != 0:
        unavailable("needs root to give the ledger to another user")
    config = seeded(tmp_path)
    ledger = tmp_path / "dunctl.db"
    os.chown(ledger, NOBODY, NOBODY)
    before = digest(ledger)
    for command in (["status"], ["tick", "--no-sync"]):
        result = cli(config, *command)
        one_line_error(result)
        assert "belongs to user nobody" in result.stderr and "sudo -u nobody" in result.stderr
    assert digest(ledger) == before
    assert not Path(f"{ledger}-wal").exists()  # nothing of root's left beside nobody's ledger


# -- as another user: permissions root would ignore ------------------------------------------------------------


@pytest.fixture
def shared_dir():
    """A directory user nobody can reach (pytest's own tmp dirs are private to root)."""
    if os.geteuid() != 0:
        unavailable("needs root to act as another user")
    path = Path(tempfile.mkdtemp(prefix="dunctl-op-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    gc.collect()
    subprocess.run(["umount", "-l", str(path / "mnt")], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def tmpfs(shared_dir: Path, size: str) -> Path:
    """A tmpfs of `size` mounted at shared_dir/mnt (the shared_dir fixture unmounts it)."""
    mount = shared_dir / "mnt"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        unavailable("cannot mount a tmpfs here")
    return mount


@contextlib.contextmanager
def as_nobody():
    """Run as user nobody (effective ids; root's saved id brings us back). The interpreter itself lives in
    root's home here, so a child process as nobody could not even start."""
    gc.collect()
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_an_unwritable_ledger_is_refused(shared_dir):
    config = seeded(shared_dir)
    ledger = shared_dir / "dunctl.db"
    os.chown(ledger, NOBODY, NOBODY)
    os.chown(shared_dir, NOBODY, NOBODY)
    ledger.chmod(0o400)
    before = digest(ledger)
    with as_nobody():
        result = cli(config, "tick", "--no-sync", "--now", at("1d").isoformat())
    one_line_error(result)
    assert "is not readable and writable by user nobody (mode 0o400)" in result.stderr
    assert f"chmod 600 {ledger}" in result.stderr
    assert digest(ledger) == before


def test_a_ledger_in_a_read_only_directory_is_refused(shared_dir):
    config = seeded(shared_dir)
    ledger = shared_dir / "dunctl.db"
    os.chown(ledger, NOBODY, NOBODY)  # the file is nobody's, the directory root's
    before = digest(ledger)
    with as_nobody():
        result = cli(config, "status")
    one_line_error(result)
    assert "is not writable by user nobody" in result.stderr and "dunctl.db-wal" in result.stderr
    assert digest(ledger) == before


def test_a_ledger_on_a_read_only_mount_is_refused(shared_dir):
    mount = tmpfs(shared_dir, "4m")
    config = seeded(mount)
    before = digest(mount / "dunctl.db")
    remount = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True)
    assert remount.returncode == 0, remount.stderr
    result = cli(config, "tick", "--no-sync", "--now", at("1d").isoformat())
    one_line_error(result)
    assert "is on a read-only file system" in result.stderr
    assert digest(mount / "dunctl.db") == before


# -- damaged, truncated, newer ---------------------------------------------------------------------------------


def _garble_schema(path: Path) -> None:
    with open(path, "r+b") as handle:   # keep the 100-byte header, garble the rest of page 1 (the schema)
        handle.seek(100)
        handle.write(bytes(range(256)) * 15)


def _truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"this is a spreadsheet, not a ledger\n" * 100)


def _header_only(path: Path) -> None:
    os.truncate(path, 60)


@pytest.mark.parametrize("damage, words", [
    (_garble_schema, "is damaged (SQLite: "),
    (_truncate_half, "is damaged (SQLite: database disk image is malformed)"),
    (_not_sqlite, "is not a dunctl ledger (not an SQLite database)"),
    (_header_only, "is truncated (60 bytes)"),
])
def test_a_damaged_ledger_is_refused_and_not_touched(tmp_path, damage, words):
    config = seeded(tmp_path, invoices=40)
    ledger = tmp_path / "dunctl.db"
    damage(ledger)
    before = digest(ledger)
    for command in (["status"], ["tick", "--no-sync", "--now", at("2d").isoformat()], ["report"]):
        result = cli(config, *command)
        one_line_error(result)
        assert words in result.stderr, (command, result.stderr)
        assert "restore the ledger from your last backup" in result.stderr
    assert digest(ledger) == before


def test_a_ledger_from_a_newer_dunctl_is_never_run_on(tmp_path):
    config = seeded(tmp_path)
    ledger = tmp_path / "dunctl.db"
    with sqlite3.connect(ledger) as conn:
        conn.execute("INSERT INTO _sqlite_migrations(migration_set, name, applied_at) "
                     "VALUES ('dunctl', 'm042_from_the_future', '2027-01-01')")
    conn.close()
    before = digest(ledger)
    for command in (["tick", "--no-sync", "--now", at("3d").isoformat()], ["status"], ["check"],
                    ["preview", "reminder", "--case", "in_0"]):
        result = cli(config, *command, env={"STRIPE_API_KEY": "sk_test_123"})
        assert result.exit_code == 2, result.output
        assert "written by a newer dunctl" in result.stderr and "m042_from_the_future" in result.stderr
        assert "Traceback" not in result.output
    assert digest(ledger) == before
    # a backup only copies it, faithfully: keeping a copy before upgrading is exactly what one should do
    assert cli(config, "backup", str(tmp_path / "copy.db")).exit_code == 0


# -- the disk and the paths a user names -----------------------------------------------------------------------


def test_a_full_disk_is_one_line_and_the_next_tick_recovers(tmp_path, monkeypatch):
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    seed(ledger, *[failed_invoice(f"in_{i:03d}", customer_id=f"cus_{i:03d}") for i in range(150)])
    ledger.close()
    real_open = Ledger.open.__func__

    def full_disk_open(cls, path, **options):
        # SQLite's own limit makes the disk "full" at the ledger's current size: every new page fails exactly
        # as on a full disk (SQLITE_FULL, "database or disk is full").
        opened = real_open(cls, path, **options)
        pages = opened.db.execute("PRAGMA page_count").fetchone()[0]
        opened.db.execute(f"PRAGMA max_page_count = {pages}")
        return opened

    monkeypatch.setattr(Ledger, "open", classmethod(full_disk_open))
    result = cli(config, "tick", "--no-sync", "--now", at("31m").isoformat())
    one_line_error(result)
    assert f"the disk holding the ledger {tmp_path / 'dunctl.db'} is full" in result.stderr
    assert "free some space" in result.stderr
    monkeypatch.undo()
    assert cli(config, "tick", "--no-sync", "--now", at("32m").isoformat()).exit_code == 0
    assert len(Ledger.open_existing(tmp_path / "dunctl.db").cases.listed()) == 150


def test_a_really_full_disk_is_named_as_such(shared_dir):
    mount = tmpfs(shared_dir, "16m")
    config = starter(mount)
    ledger = open_engine_ledger(config)
    seed(ledger, *[failed_invoice(f"in_{i:03d}", customer_id=f"cus_{i:03d}") for i in range(150)])
    ledger.close()
    gc.collect()
    stat = os.statvfs(mount)
    with open(mount / "filler", "wb") as filler, contextlib.suppress(OSError):
        filler.write(b"x" * (stat.f_bavail * stat.f_frsize))
    result = cli(config, "tick", "--no-sync", "--now", at("31m").isoformat())
    one_line_error(result)
    assert f"the disk holding the ledger {mount / 'dunctl.db'} is full" in result.stderr
    (mount / "filler").unlink()
    gc.collect()
    again = cli(config, "tick", "--no-sync", "--now", at("32m").isoformat())
    assert again.exit_code == 0, again.output
    assert len(Ledger.open_existing(mount / "dunctl.db").cases.listed()) == 150


def test_a_report_into_a_missing_directory_is_one_line(tmp_path):
    config = seeded(tmp_path)
    target = tmp_path / "reports" / "2026" / "november.html"
    result = cli(config, "report", "--format", "html", "-o", str(target))
    one_line_error(result)
    assert str(target) in result.stderr and "directory does not exist" in result.stderr
    assert not (tmp_path / "reports").exists()
