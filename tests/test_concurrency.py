"""Exactly once under concurrency and crashes: real `dunctl tick` processes against one ledger file."""

import asyncio
import socket
import threading
import time

import pytest

from tests.helpers import at, customer, dunctl_process, failed_invoice, open_engine_ledger, seed, starter, sent_as
from tests.servers import SmtpServer


class SlowSmtpServer(SmtpServer):
    """Takes a while over each message, so ticks overlap for real."""

    def __init__(self, delay: float):
        super().__init__()
        handler = self.controller.handler
        original = handler.handle_DATA

        async def slow(server, session, envelope):
            await asyncio.sleep(delay)
            return await original(server, session, envelope)

        handler.handle_DATA = slow


def test_ticks_started_together_send_each_message_once(tmp_path):
    with SlowSmtpServer(delay=0.3) as smtp:
        config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp.host,
                                                         "port": smtp.port}})
        ledger = open_engine_ledger(config)
        invoices = [failed_invoice(f"in_{i}", customer_id=f"cus_{i}") for i in range(4)]
        seed(ledger, *invoices, customers=[customer(f"cus_{i}", email=f"c{i}@example.com") for i in range(4)])
        processes = [dunctl_process(config, "tick", "--no-sync", "--now", at("31m").isoformat())
                     for _ in range(4)]
        codes = [p.wait(timeout=60) for p in processes]
        stderr = [p.stderr.read() for p in processes]
    assert sorted(codes).count(0) >= 1 and set(codes) <= {0, 3}, stderr
    assert 3 in codes  # the others found the lock held and did nothing
    assert any("another dunctl tick is running" in text for text in stderr)
    assert sorted(r.rcpt_tos[0] for r in smtp.received) == [f"c{i}@example.com" for i in range(4)]


def test_ticks_run_repeatedly_and_concurrently_never_duplicate_a_message(tmp_path):
    with SmtpServer() as smtp:
        config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp.host,
                                                         "port": smtp.port}})
        ledger = open_engine_ledger(config)
        seed(ledger, *[failed_invoice(f"in_{i}", customer_id=f"cus_{i}") for i in range(3)],
             customers=[customer(f"cus_{i}", email=f"c{i}@example.com") for i in range(3)])
        # two "cron hosts" tick through the first five days, each tick racing its twin: at each email step, an
        # hour after one (nothing again), and a day after one fell due (caught up once)
        for offset in ("31m", "3d", "3d1h", "5d"):
            pair = [dunctl_process(config, "tick", "--no-sync", "--now", at(offset).isoformat()) for _ in range(2)]
            codes = [p.wait(timeout=60) for p in pair]
            assert set(codes) <= {0, 3}, [p.stderr.read() for p in pair]
        received = sorted((r.rcpt_tos[0], sent_as(config, r.message)[1]) for r in smtp.received)
    expected = sorted((f"c{i}@example.com", step) for i in range(3) for step in ("notice", "reminder", "update-link"))
    assert received == expected


class BlackHoleSmtp:
    """Accepts connections and never answers: a send that hangs after the action was claimed."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.connections:
            conn.close()


def test_a_tick_killed_between_claim_and_send_leaves_unknown_and_is_never_resent(tmp_path):
    hole = BlackHoleSmtp()
    config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": "127.0.0.1", "port": hole.port,
                                                     "timeout": 60}})
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    process = dunctl_process(config, "tick", "--no-sync", "--now", at("31m").isoformat())
    deadline = time.time() + 30
    while time.time() < deadline:
        rows = ledger.db.execute("SELECT status FROM actions WHERE step_id = 'notice'").fetchall()
        if rows and rows[0][0] == "claimed" and hole.connections:
            break
        time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("the tick never claimed the notice")
    process.kill()  # the crash: claimed, connected, nothing recorded
    process.wait()
    hole.close()

    with SmtpServer() as smtp:
        working = starter(tmp_path / "fixed", **{"channels.email": {"transport": "smtp", "host": smtp.host,
                                                                    "port": smtp.port},
                                                 "ledger.path": str(ledger.path)})
        for offset in ("40m", "2h", "1d"):
            after = dunctl_process(working, "tick", "--no-sync", "--now", at(offset).isoformat())
            assert after.wait(timeout=60) == 0, after.stderr.read()
        assert smtp.received == []
    action = ledger.actions(ledger.cases.for_invoice("in_1")["id"])[0]
    assert action["status"] == "unknown"
    assert "will not be re-sent" in action["error"]
    status = dunctl_process(working, "status")
    assert status.wait(timeout=60) == 0
    assert "1 action(s) with unknown outcome" in status.stdout.read()


def test_a_person_pausing_a_case_during_a_tick_waits_for_it_instead_of_crashing_it(tmp_path):
    from tests.helpers import cli

    with SlowSmtpServer(delay=0.5) as smtp:
        config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp.host,
                                                         "port": smtp.port}})
        ledger = open_engine_ledger(config)
        seed(ledger, *[failed_invoice(f"in_{i}", customer_id=f"cus_{i}") for i in range(4)],
             customers=[customer(f"cus_{i}", email=f"c{i}@example.com") for i in range(4)])
        running = dunctl_process(config, "tick", "--no-sync", "--now", at("31m").isoformat())
        deadline = time.time() + 30
        while not smtp.received and time.time() < deadline:
            time.sleep(0.05)
        paused = cli(config, "case", "pause", "in_3", "--reason", "paying by wire", "--now", at("31m").isoformat())
        dry = dunctl_process(config, "tick", "--dry-run", "--no-sync", "--now", at("31m").isoformat())
        assert running.wait(timeout=60) == 0, running.stderr.read()
        assert dry.wait(timeout=60) == 0, dry.stderr.read()
    assert paused.exit_code == 0, paused.output
    assert "Traceback" not in paused.output
    assert ledger.cases.for_invoice("in_3")["state"] == "paused"
    assert len(smtp.received) == len({r.rcpt_tos[0] for r in smtp.received})   # nothing twice


def test_ticks_racing_on_a_brand_new_ledger_never_crash_in_its_migrations(tmp_path):
    config = starter(tmp_path, ledger=False)
    processes = [dunctl_process(config, "tick", "--new-ledger", "--no-sync", "--now", at("1h").isoformat())
                 for _ in range(10)]
    codes = [p.wait(timeout=120) for p in processes]
    errors = [p.stderr.read() for p in processes]
    assert set(codes) <= {0, 3} and 0 in codes, errors
    assert not any("Traceback" in e for e in errors), errors
    ledger = open_engine_ledger(config)
    assert ledger.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert ledger.cases.listed() == []
