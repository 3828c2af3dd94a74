"""Building blocks for engine and CLI tests: a starter config in a temp dir, invoices seeded through the same
SyncBatch seam the gateways use, and a `dunctl` runner."""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from typer.testing import CliRunner

from dunctl.config import load_config
from dunctl.errors import UsageError
from dunctl.failures import Decline
from dunctl.ledger import Ledger
from dunctl.model import Customer, Invoice, PaymentMethod, Signal, Subscription, SyncBatch
from dunctl.scaffold import write_starter
from dunctl.tick.preflight import templates_parse

T0 = datetime(2026, 11, 2, 14, 0, tzinfo=timezone.utc)  # a Monday, 09:00 in New York


def at(offset: str | timedelta = "0", base: datetime = T0) -> datetime:
    if isinstance(offset, timedelta):
        return base + offset
    from dunctl.offsets import parse_offset

    return parse_offset(offset).after(base)


def starter(directory: Path, *, ledger: bool = True, **settings) -> Path:
    """A starter config in `directory`, with dotted-path overrides: starter(d, **{"stripe.retries": "dunctl"}).
    Like `dunctl init`, it creates the (empty) ledger too, unless ledger=False."""
    template = _starter_template()
    _copy_starter(template, directory)
    path = directory / "dunctl.yaml"
    data = copy.deepcopy(template.data)
    data["mode"] = "live"
    data["sender"]["quiet_hours"] = None
    data.pop("contact", None)   # tests of the contact policy set it explicitly
    data["stripe"]["recheck_before_action"] = False
    for dotted, value in settings.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    path.write_text(yaml.dump(data, Dumper=_Dumper, sort_keys=False))
    if ledger:  # read from the YAML, not load_config: tests often add the sequences a segment names afterwards
        _new_ledger(template.ledger, directory / (data.get("ledger") or {}).get("path", "dunctl.db"))
    return path


_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)   # libyaml writes the same text, 5x faster


@dataclass(frozen=True)
class _Template:
    files: Path             # what `dunctl init` writes (write_starter)
    relative: tuple[Path, ...]
    data: dict              # its dunctl.yaml, parsed
    ledger: Path            # an empty ledger with every migration applied
    directories: tuple[Path, ...]                # every directory under `files`, relative, parents first
    contents: tuple[tuple[Path, bytes, int], ...]   # every file under `files`: relative path, bytes, mtime (ns)


@functools.lru_cache(maxsize=1)
def _starter_template() -> _Template:
    """The starter's files and an empty ledger, made once per test process and copied for each test: writing them
    and migrating a new ledger from nothing cost ~0.1 s of CPU, and hundreds of tests start from a starter.

    A tick parses every template before it starts unless the ledger knows them as parsed (their names, sizes and
    modification times: dunctl/tick/preflight.py), 0.2 s of CPU for the starter's 277. The templates are parsed
    here, once, and the empty ledger records them as a first tick would; the copies keep the files' times, so a
    test's first tick knows them, and a template a test edits or adds is parsed again, as on a user's machine."""
    root = Path(tempfile.mkdtemp(prefix="dunctl-starter-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    files = root / "files"
    written = write_starter(files)
    ledger = Ledger.open(root / "empty.db", create=True)
    ledger.set_state("templates_parsed", templates_parse(load_config(files / "dunctl.yaml")))
    ledger.close()
    data = yaml.load((files / "dunctl.yaml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    found = sorted(files.rglob("*"))
    return _Template(files, tuple(p.relative_to(files) for p in written), data, root / "empty.db",
                     tuple(p.relative_to(files) for p in found if p.is_dir()),
                     tuple((p.relative_to(files), p.read_bytes(), p.stat().st_mtime_ns) for p in found if p.is_file()))


def _copy_starter(template: _Template, directory: Path) -> None:
    """write_starter, from the template's copy: the same files (and modification times: see _starter_template),
    and the same refusal to overwrite. Written from memory: shutil.copytree's reads, stats and copystat calls on
    the 284 files made it 1.5-2x the CPU, and hundreds of tests start from a starter."""
    existing = directory.exists() and [directory / p for p in template.relative if (directory / p).exists()]
    if existing:
        raise UsageError(f"{existing[0]} already exists; dunctl init never overwrites",
                         "choose an empty directory: dunctl init DIR")
    directory.mkdir(parents=True, exist_ok=True)
    for relative in template.directories:
        (directory / relative).mkdir(exist_ok=True)
    for relative, data, mtime in template.contents:
        target = directory / relative
        target.write_bytes(data)
        os.utime(target, ns=(mtime, mtime))


def _new_ledger(template: Path, path: Path) -> None:
    """A copy of the empty ledger (mode 0600 like the one dunctl makes), with an id of its own: a new ledger gets a
    new random id (migration m105), and tests of adoption tell ledgers apart by it. Like Ledger.open(create=True),
    an existing ledger is left as it is."""
    if path.exists():
        Ledger.open(path, create=True).close()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, path)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE sync_state SET value = ? WHERE name = 'ledger_id'",
                     [json.dumps(f"ldg_{secrets.token_hex(8)}")])


def new_ledger(path: Path) -> Ledger:
    """Ledger.open(path) for a file that does not exist yet: the new, empty ledger, copied from the one the process
    made once (migrating a ledger from nothing costs ~0.06 s of CPU)."""
    _new_ledger(_starter_template().ledger, path)
    return Ledger.open(path)


def init_ledger(config_path: Path) -> Path:
    """Create the config's ledger with its schema, as `dunctl init` does (tick and sync never create one)."""
    from dunctl.scaffold import create_ledger

    return create_ledger(config_path)


def failed_invoice(invoice_id: str = "in_1", *, customer_id: str = "cus_1", amount: int = 4900,
                   currency: str = "usd", decline_code: str | None = "insufficient_funds",
                   code: str = "card_declined", failed_at: datetime = T0, attempt_count: int = 1,
                   payment_method_type: str = "card", failure_code: str | None = None,
                   subscription_id: str | None = "sub_1", metadata: dict | None = None) -> Invoice:
    return Invoice(
        id=invoice_id, customer_id=customer_id, currency=currency, amount_due=amount, amount_paid=0,
        amount_remaining=amount, status="open", created=failed_at - timedelta(hours=1),
        number=f"INV-{invoice_id[3:]}", subscription_id=subscription_id, billing_reason="subscription_cycle",
        attempt_count=attempt_count, hosted_invoice_url=f"https://invoice.stripe.test/{invoice_id}",
        customer_email=None, payment_method_id="pm_1", payment_method_type=payment_method_type,
        metadata=metadata or {}, first_failed_at=failed_at, failed_at=failed_at,
        decline=Decline(code=code, decline_code=decline_code, failure_code=failure_code,
                        payment_method_type=payment_method_type))


def customer(customer_id: str = "cus_1", email: str = "ada@example.com", **metadata) -> Customer:
    return Customer(id=customer_id, name="Ada Lovelace", email=email, phone="+15555550100",
                    metadata={k: str(v) for k, v in metadata.items()})


def seed(ledger: Ledger, *invoices: Invoice, customers: list[Customer] | None = None,
         now: datetime = T0) -> None:
    """Land invoices (and their customers) in the ledger the way a sync would."""
    customers = customers or [customer(inv.customer_id, email=f"{inv.customer_id}@example.com")
                              for inv in invoices]
    ledger.sync.apply_batch(SyncBatch(
        customers=customers,
        payment_methods=[PaymentMethod("pm_1", customers[0].id, "card", "visa", "4242", 8, 2030)],
        subscriptions=[Subscription(inv.subscription_id, inv.customer_id, "past_due")
                       for inv in invoices if inv.subscription_id],
        invoices=list(invoices)), now)


def pay(ledger: Ledger, invoice: Invoice, at_: datetime) -> None:
    """The customer pays: the next sync sees the invoice paid."""
    paid = Invoice(**{**invoice.__dict__, "status": "paid", "amount_paid": invoice.amount_due,
                      "amount_remaining": 0, "paid_at": at_})
    ledger.sync.apply_batch(SyncBatch(invoices=[paid]), at_)


def signal(ledger: Ledger, kind: str, at_: datetime, **fields) -> None:
    ledger.sync.apply_batch(SyncBatch(signals=[Signal(kind=kind, at=at_, **fields)]), at_)


def open_engine_ledger(config_path: Path) -> Ledger:
    return Ledger.open(load_config(config_path).ledger_path)


def sent_as(config_path: Path, message) -> tuple[str, str]:
    """(invoices, steps) an email was sent for, found in the ledger from its opaque `X-Dunctl-Ref` (customers see
    no internal names): "in_1", "notice" for one case's step; "in_a, in_b", "in_a:notice, in_b:notice" for
    several delivered as one message."""
    from dunctl.channels.email import reference

    ref = message["X-Dunctl-Ref"]
    ledger = open_engine_ledger(config_path)
    try:
        rows = list(ledger.rows("SELECT c.invoice_id, a.step_id, a.idempotency_key, a.message_ref FROM actions a "
                                "JOIN cases c ON c.id = a.case_id ORDER BY a.id"))
    finally:
        ledger.close()
    # the email went out under one of its actions' keys; the others delivered with it share its message_ref
    lead = next((r for r in rows if reference(r["idempotency_key"]) == ref), None)
    if lead is None:
        return "", ""
    found = sorted((r["invoice_id"], r["step_id"]) for r in rows
                   if r is lead or (lead["message_ref"] and r["message_ref"] == lead["message_ref"]))
    if len(found) == 1:
        return found[0]
    return ", ".join(i for i, _ in found), ", ".join(f"{i}:{s}" for i, s in found)


runner = CliRunner()


def cli(config_path: Path, *args: str, env: dict | None = None):
    """Run dunctl in-process with CliRunner (fixed terminal width)."""
    from dunctl.cli.app import app

    return runner.invoke(app, ["-c", str(config_path), *args], env={"COLUMNS": "160", **(env or {})})


def dunctl_process(config_path: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """Start `dunctl` as a separate process (for concurrency and crash tests)."""
    full_env = {**os.environ, "COLUMNS": "160", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "dunctl", "-c", str(config_path), *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def unavailable(reason: str) -> None:
    """A test that needs what this machine lacks: skipped on a developer's machine, a failure in CI (`CI=1`, set by
    .ci/run, which installs what the tests need), so CI never passes a test it did not run."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run this test)")
    pytest.skip(reason)


def traced(ledger, run) -> list[str]:
    """The statements `run()` executes, as SQLite traces them: each statement, and each step of a trigger it
    fires (traced with the statement's text)."""
    statements: list[str] = []
    ledger.conn.set_trace_callback(statements.append)
    try:
        run()
    finally:
        ledger.conn.set_trace_callback(None)
    return statements
