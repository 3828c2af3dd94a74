"""The executor (dunctl/tick/executor.py) knows only the `Effect` and `Journal` protocols of dunctl/effect.py: a
new family of effects (here a receivables reminder, with a journal of its own on a real ledger file) is one class,
runs exactly once, and after a crash mid-send leaves at most the one in flight `unknown`."""

import ast
import inspect
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from dunctl.clock import iso
from dunctl.config import load_config
from dunctl.effect import Outcome, Prepared
from dunctl.ledger import Ledger
from dunctl.ledger import journal as journals
from dunctl.tick import executor
from dunctl.tick.context import TickContext
from dunctl.tick.result import TickResult
from tests.helpers import at, starter

REMINDERS = "reminders"


class Crash(BaseException):
    """The process dying mid-send: nothing catches it."""


class ReminderJournal(journals._Journal):
    """A family's own table: the protocol's columns, a claim per reminder; the started mark and the orphan sweep are
    the shared ones."""

    table = REMINDERS

    def claim(self, effect, now: datetime, tick_id: int | None) -> int | None:
        row = self.conn.execute("UPDATE reminders SET status = 'claimed', tick_id = ?, claimed_at = ? "
                                "WHERE key = ? AND status = 'pending' RETURNING id",
                                [tick_id, iso(now), effect.key]).fetchone()
        return row[0] if row else None

    def release(self, claim_id: int) -> None:
        self.conn.execute("UPDATE reminders SET status = 'pending' WHERE id = ?", [claim_id])

    def record_many(self, results, now: datetime) -> None:
        self.conn.executemany("UPDATE reminders SET status = ?, detail = ? WHERE id = ?",
                              [(o.status, o.error or o.detail, claim_id) for claim_id, _, o in results])

    def _settle_noted(self, row: dict, now: datetime) -> None:
        self.record_many([(row["id"], None, Outcome(row["outcome"], "noted"))], now)

    def _settle_unknown(self, row: dict, now: datetime) -> None:
        self.record_many([(row["id"], None, Outcome("unknown", "in flight"))], now)


@dataclass(frozen=True)
class Reminder:
    """A reminder that a net-terms invoice is due: the whole of a new effect family."""

    invoice_id: str
    due_at: datetime
    sent: list                  # what "delivering" it did, for the test to see
    crash: bool = False

    journal = REMINDERS
    kind, name, action, channel, audience, step = "reminder", "due-soon", "email", "email", "customer", None
    case_id = planned_for = None
    needs_open_case = False

    @property
    def key(self) -> str:
        return f"dunctl-{self.invoice_id}-reminder"

    @property
    def label(self) -> str:
        return f"reminder:{self.name}"

    def together_key(self, grouping: bool) -> None:
        return None

    def suppressed(self, ctx) -> Outcome | None:
        return None

    def prepare(self, ctx, together: list) -> Prepared:
        def deliver() -> Outcome:
            if self.crash:
                raise Crash()
            self.sent.append(self.invoice_id)
            return Outcome("done", f"reminded about {self.invoice_id}")

        return Prepared(f"remind about {self.invoice_id}", deliver)

    def record(self, ctx, outcome: Outcome) -> None:
        pass


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setitem(journals.JOURNALS, REMINDERS, ReminderJournal)   # a family with a table of its own
    config = load_config(starter(tmp_path))
    ledger = Ledger.open(config.ledger_path)
    ledger.conn.executescript(
        """CREATE TABLE reminders (id INTEGER PRIMARY KEY, key TEXT UNIQUE, status TEXT, detail TEXT,
             claimed_at TEXT, started_at TEXT, outcome TEXT, tick_id INTEGER);
           CREATE INDEX reminders_claimed ON reminders(id) WHERE status = 'claimed';""")
    ledger.conn.executemany("INSERT INTO reminders(key, status) VALUES (?, 'pending')",
                          [(f"dunctl-in_{i}-reminder",) for i in range(3)])
    yield TickContext(ledger, config, None, None, at("1h"))
    ledger.close()


def statuses(ledger) -> list[str]:
    return [r["status"] for r in ledger.rows("SELECT status FROM reminders ORDER BY id")]


def test_a_new_effect_family_is_one_class_and_runs_exactly_once(ctx):
    sent: list[str] = []
    reminders = [Reminder(f"in_{i}", at("1h"), sent) for i in range(3)]
    result = TickResult(now=ctx.now)
    executor.execute(ctx, reminders, result)
    executor.execute(ctx, reminders, TickResult(now=ctx.now))     # a second tick finds them finished
    assert sent == ["in_0", "in_1", "in_2"] and statuses(ctx.ledger) == ["done"] * 3
    assert [(a.invoice_id, a.step, a.status) for a in result.actions] == \
        [(f"in_{i}", "reminder:due-soon", "done") for i in range(3)]


def test_a_crash_mid_send_leaves_only_the_one_in_flight_unknown(ctx):
    sent: list[str] = []
    reminders = [Reminder("in_0", at("1h"), sent), Reminder("in_1", at("1h"), sent, crash=True),
                 Reminder("in_2", at("1h"), sent)]
    with pytest.raises(Crash):
        executor.execute(ctx, reminders, TickResult(now=ctx.now))
    assert statuses(ctx.ledger) == ["claimed"] * 3                 # the batch's claims, committed before any send
    with ctx.ledger.transaction():
        ctx.ledger.journal(REMINDERS).settle_orphans(at("2h"))     # the next tick
    assert sent == ["in_0"] and statuses(ctx.ledger) == ["done", "unknown", "pending"]


def test_the_executor_never_asks_which_family_an_effect_is():
    """No `kind`, no family's constant, no family's module: what differs lives in the effect and its journal."""
    tree = ast.parse(inspect.getsource(executor))
    asked = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert "kind" not in asked and not names & {"NOTICE", "STEP", "SYSTEM", "ACTIONS", "TOGETHER", "MARK_ACTION"}
    assert not {m for m in imported if m.startswith(("dunctl.notices", "dunctl.tick.actions"))}


def runtime_imports(path) -> set[str]:
    """The dunctl modules a file imports when it runs, inside functions too (not those named for types only)."""
    tree = ast.parse(path.read_text())
    for_types = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    return {node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and id(node) not in for_types and node.module}


def test_the_notices_build_on_the_effect_protocol_and_never_import_the_tick_that_runs_them():
    """The tick runs the notices (tick/run.py), so a notice module importing the tick, even inside a function,
    would be an import cycle."""
    import dunctl.notices

    for path in Path(dunctl.notices.__file__).parent.glob("*.py"):
        assert not {m for m in runtime_imports(path) if m.startswith("dunctl.tick")}, path.name
