"""A busy tick's bookkeeping per email, counted in statements (not timed): a batch's claims are one statement,
and what each message says was sent and tried is read for the whole batch in the transaction that claims it, not
by a read of its own per message (each a read transaction: four lock calls between two commits); and the
objects loaded by the end of the first batch are frozen out of the garbage collector's full passes."""

import ast
import gc
import sqlite3
from datetime import timedelta
from pathlib import Path

from bench.ledger_builder import build
from dunctl import collector
from dunctl.config import load_config
from dunctl.tick import build_channels, run_tick
from tests.helpers import T0, traced

DUE = 6


def busy_tick(directory):
    config_path, ledger = build(directory, DUE, due=DUE)
    config = load_config(config_path)
    found = {}

    def tick():
        found["result"] = run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(hours=1),
                                   sync=False)

    statements = traced(ledger, tick)
    sent = [a for a in found["result"].actions if a.status == "done" and a.action == "email"]
    assert len(sent) == DUE
    return statements


def test_a_batch_of_claims_is_one_statement(tmp_path):
    claims = [s for s in busy_tick(tmp_path) if s.startswith("INSERT OR IGNORE INTO actions")]
    # one INSERT for the batch's six new claims (its trigger steps are traced with its text), not one each
    assert {s.count("'claimed'") for s in claims} == {DUE}, claims[:2]


def test_what_was_sent_and_tried_is_read_once_a_batch(tmp_path):
    statements = busy_tick(tmp_path)
    one_by_one = [s for s in statements if "FROM actions WHERE case_id = " in s and "status = 'done'" in s]
    batch = [s for s in statements if "FROM actions WHERE case_id IN (" in s and "status = 'done'" in s]
    assert not one_by_one and len(batch) == 1, (one_by_one, batch)


def test_what_the_process_holds_after_the_first_batch_is_kept_out_of_full_collections(tmp_path, monkeypatch):
    # dunctl/collector.py: a full collection later in the tick walks only what the tick made since, not the
    # modules, templates and caches loaded by then (gc.freeze, once per process: as if this were the first tick)
    monkeypatch.setattr(collector, "_frozen", False)
    before = gc.get_freeze_count()
    busy_tick(tmp_path)
    assert gc.get_freeze_count() > before


def test_no_import_statement_runs_for_each_case_or_email():
    # an import inside a function runs on every call: for a loaded module a lookup and two AttributeErrors
    # formatted and dropped (dunctl/tick/loaded.py); these run for every case planned or email sent
    per_email = {"dunctl/tick/run.py": {"_plan_one", "_went_as_planned", "prepare_case", "_channel"},
                 "dunctl/tick/channels.py": {"email"}}
    for path, names in per_email.items():
        tree = ast.parse((Path(__file__).parent.parent / path).read_text())
        found = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert names <= set(found), path
        for name in names:
            imports = [n for n in ast.walk(found[name]) if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert not imports, f"{path} {name} imports on every call"


def test_a_null_binds_without_the_adapter_lookup(tmp_path):
    # a None parameter otherwise asks sqlite3's protocol class for __adapt__ and drops the AttributeError
    # (dunctl/ledger/file.py); it still binds as NULL
    from dunctl.ledger import Ledger

    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters
    ledger = Ledger.open(tmp_path / "ledger.db")
    assert ledger.conn.execute("SELECT ? IS NULL, typeof(?)", [None, None]).fetchone() == (1, "null")
    ledger.close()
