"""What keeps the demo's hourly ticks cheap (issue #25): a tick pays for what changed, not for what exists.
Counted (SQL statements, compilations), not timed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.tick import build_channels, run_tick
from tests.helpers import T0, failed_invoice, seed, starter, traced


WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def looks(ledger: Ledger, config, now) -> list[int]:
    """Each time one tick asked what waits (one query answers every part of it: claims, holds ending, signals,
    invoices, cases due, follow-ups, notices), how many writes came before since the previous look."""
    statements = traced(ledger, lambda: run_tick(ledger, config, None, build_channels(config, {}), now, sync=False))
    found, writes = [], 0
    for s in statements:
        if "EXISTS (SELECT 1 FROM holds" in s:
            found.append(writes)
            writes = 0
        elif s.lstrip().split()[0] in WRITES:
            writes += 1
    return found


def test_a_tick_asks_what_waits_once_and_again_only_after_a_write(tmp_path):
    config = load_config(starter(tmp_path, **{"channels.email": {"transport": "file", "dir": "outbox"}}))
    ledger = Ledger.open(config.ledger_path)
    try:
        seed(ledger, failed_invoice())
        # the case opens and its first email is due at 1h: the tick acts; it asks again only after it wrote
        acted = looks(ledger, config, T0 + timedelta(hours=1))
        assert len(acted) > 1 and all(acted[1:]), acted
        # an hour later nothing is due and nothing changed: one look for the whole tick (its record came before)
        assert looks(ledger, config, T0 + timedelta(hours=2)) == [1]
        # the invoice changed (Stripe tried again): it is followed, nothing is due, nothing acts
        seed(ledger, failed_invoice(attempt_count=2), now=T0 + timedelta(hours=2))
        followed = looks(ledger, config, T0 + timedelta(hours=3))
        assert all(followed[1:]), followed
        assert ledger.conn.execute("SELECT attempts FROM cases").fetchone()[0] == 2
        assert looks(ledger, config, T0 + timedelta(hours=4)) == [1]
    finally:
        ledger.close()


@pytest.mark.parametrize("where", ["file", "memory"])
def test_an_idle_tick_writes_only_its_own_record(tmp_path, where):
    """A demo's hour with nothing to do: no write transaction (orphaned claims looked for by one read each, the
    account's mode written only when it changes); what it writes is its own record (net-terms invoices coming
    due are looked for only once one can be: there is none here). And it reads two things: the ledger's state in
    one query, and what waits for any part of the tick (claims, holds, signals, invoices, cases, follow-ups,
    notices to plan or send, actions waiting for a person) in one more (dunctl/ledger/quiet.py)."""
    from dunctl.simulation.account import SimulatedAccount
    from dunctl.simulation.demo import DemoChannels, prepare_demo
    from dunctl.simulation.population import build_book

    config = load_config(prepare_demo(tmp_path / "demo"))
    ledger = Ledger.open(config.ledger_path)
    if where == "memory":      # as `dunctl demo` works it (simulation/demo.py worked_in_memory)
        on_file, ledger = ledger, ledger.snapshot_in_memory()
        on_file.close()
    account = SimulatedAccount(build_book(2, 1), seed=1, start=T0)
    try:
        for hours in (1, 2):           # the first tick syncs the book; the second finds nothing new
            run_tick(ledger, config, account, DemoChannels(config, {}), T0 + timedelta(hours=hours), mode="live")
        statements: list[str] = []
        ledger.conn.set_trace_callback(statements.append)
        result = run_tick(ledger, config, account, DemoChannels(config, {}), T0 + timedelta(hours=3), mode="live")
        ledger.conn.set_trace_callback(None)
        assert not result.did_something
        writes = [s for s in statements if s.split()[0] in ("BEGIN", "INSERT", "UPDATE", "DELETE")]
        assert [w.split("(")[0].split(" SET")[0] for w in writes] == ["INSERT INTO ticks", "UPDATE ticks"], writes
        assert len(statements) <= 4, statements         # 23 before issue #25's fifth round, 13 before its eighth
        # a ledger in memory is this process's alone: its state, read once, is kept from one tick to the next
        assert sum(1 for s in statements if "FROM sync_state" in s) == (1 if where == "file" else 0)
        assert sum(1 for s in statements if "FROM holds" in s or "FROM signals" in s or "FROM invoices" in s) == 1
    finally:
        ledger.close()


# -- compiled templates kept between processes (dunctl/messages/compiled.py) ---------------------------------------


def starter_templates(directory):
    from dunctl.scaffold import write_starter

    write_starter(directory)
    return directory / "templates"


def render(directory) -> tuple[str, str]:
    """One message from a fresh Templates (as a new process makes): its text, and the file its code names."""
    from dunctl.messages.templates import Templates

    templates = Templates(directory)
    template = templates.env.get_template("payment-failed.subject.j2")
    text = template.render(count=1, tone="standard", company="Acme", invoice={"number": "INV-1"}, amount="$1.00")
    return text, template.root_render_func.__code__.co_filename


def test_a_template_compiled_in_one_directory_is_not_compiled_again_for_the_same_source_in_another(
        tmp_path, monkeypatch):
    """A demo writes its templates into a new directory each run: the compiled code follows the source, not the
    path, and names the file it now renders from (tracebacks and Jinja's error lines)."""
    monkeypatch.setenv("DUNCTL_CACHE_DIR", str(tmp_path / "cache"))
    first, second = starter_templates(tmp_path / "a"), starter_templates(tmp_path / "b")
    text, filename = render(first)
    entries = sorted((tmp_path / "cache" / "templates").iterdir())
    assert len(entries) == 1 and filename == str(first / "payment-failed.subject.j2")
    again, filename = render(second)
    assert again == text
    assert sorted((tmp_path / "cache" / "templates").iterdir()) == entries      # found, not compiled and kept again
    assert filename == str(second / "payment-failed.subject.j2")


def test_an_edited_template_renders_its_new_text_and_an_unusable_cache_only_costs_the_compile(tmp_path, monkeypatch):
    monkeypatch.setenv("DUNCTL_CACHE_DIR", str(tmp_path / "cache"))
    templates = starter_templates(tmp_path / "a")
    render(templates)
    (templates / "payment-failed.subject.j2").write_text("Edited {{ invoice.number }}")
    assert render(templates)[0] == "Edited INV-1"
    assert len(list((tmp_path / "cache" / "templates").iterdir())) == 2
    monkeypatch.setenv("DUNCTL_CACHE_DIR", "off")
    assert render(templates)[0] == "Edited INV-1"
    (tmp_path / "file").write_text("")        # a cache "directory" that cannot be made: no cache, no error
    monkeypatch.setenv("DUNCTL_CACHE_DIR", str(tmp_path / "file"))
    assert render(templates)[0] == "Edited INV-1"


def test_a_damaged_compiled_template_is_compiled_again(tmp_path, monkeypatch):
    """An entry cut short or overwritten (a full disk, another tool) is a miss, read from its bytes as Jinja would."""
    monkeypatch.setenv("DUNCTL_CACHE_DIR", str(tmp_path / "cache"))
    templates = starter_templates(tmp_path / "a")
    text = render(templates)[0]
    (entry,) = (tmp_path / "cache" / "templates").iterdir()
    whole = entry.read_bytes()
    for damaged in (whole[:len(whole) // 2], whole[:12], b"", b"j2" + whole[2:], whole[:8] + b"\x80\x04junk"):
        entry.write_bytes(damaged)
        assert render(templates)[0] == text
        assert entry.read_bytes() == whole      # compiled and kept again


def test_a_resynced_invoice_with_nothing_new_leaves_its_case_and_the_report_rollups_alone(tmp_path):
    """Every sync of an invoice with a case follows it; when the amount owed and the attempts are the same, the
    case's row is not written (a write, even of the same values, runs the report rollups' trigger)."""
    config = load_config(starter(tmp_path))
    ledger = Ledger.open(config.ledger_path)
    try:
        invoice = failed_invoice(metadata={"po": "1"})
        seed(ledger, invoice)
        run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(minutes=5), sync=False)
        seed(ledger, failed_invoice(metadata={"po": "2"}))      # the same failure, a field dunctl does not follow
        statements = traced(ledger, lambda: run_tick(ledger, config, None, build_channels(config, {}),
                                                     T0 + timedelta(minutes=10), sync=False))
        assert [s for s in statements if s.startswith("UPDATE cases SET amount_remaining")] != []   # followed
        assert len([s for s in statements if s.startswith("UPDATE cases SET amount_remaining")]) == 1, statements
        assert ledger.conn.execute("SELECT amount_remaining, attempts FROM cases").fetchone() == (4900, 1)
    finally:
        ledger.close()


def net_terms_invoice(invoice_id: str, due):
    from dunctl.model import Invoice

    return Invoice(id=invoice_id, customer_id=f"cus_{invoice_id}", currency="usd", amount_due=90000, amount_paid=0,
                   amount_remaining=90000, status="open", created=T0, number=f"INV-{invoice_id}",
                   collection_method="send_invoice", due_date=due, hosted_invoice_url="https://invoice.stripe.test/x")


def test_net_terms_invoices_are_looked_for_only_once_one_can_come_due_and_each_still_opens_on_time(tmp_path):
    """The look for net-terms invoices coming due (a case opens a week before the due date with the starter
    config) runs when `now` plus that lead reaches the earliest due date seen, not on every tick; an invoice
    synced later with an earlier due date brings the next look forward."""
    config = load_config(starter(tmp_path))
    ledger = Ledger.open(config.ledger_path)
    day = timedelta(days=1)

    def tick(at) -> list[str]:
        return traced(ledger, lambda: run_tick(ledger, config, None, build_channels(config, {}), at, sync=False))

    def looks(statements) -> int:
        return sum(1 for s in statements if s.startswith("UPDATE invoices SET pending = 1"))

    def opened() -> list[str]:
        return [row[0] for row in ledger.conn.execute("SELECT invoice_id FROM cases ORDER BY id")]

    try:
        seed(ledger, net_terms_invoice("in_late", T0 + 30 * day))
        assert looks(tick(T0 + timedelta(hours=1))) == 1            # the first look: nothing known yet
        assert [looks(tick(T0 + n * day)) for n in (1, 2, 3)] == [0, 0, 0] and opened() == []
        seed(ledger, net_terms_invoice("in_soon", T0 + 15 * day), now=T0 + 3 * day)
        tick(T0 + 3 * day + timedelta(hours=1))                     # synced: reconciled, too early for a case
        assert looks(tick(T0 + 7 * day)) == 0 and opened() == []    # a day before its first reminder
        # it opens; the tick's second reconcile looks again, and from then on the next look is in_late's
        assert looks(tick(T0 + 8 * day)) == 2 and opened() == ["in_soon"]
        assert [looks(tick(T0 + n * day)) for n in (9, 12, 20, 22)] == [0, 0, 0, 0]
        assert looks(tick(T0 + 23 * day)) >= 1 and opened() == ["in_soon", "in_late"]
    finally:
        ledger.close()


def test_a_resynced_subscription_with_nothing_new_is_not_written_again(tmp_path):
    """A sync brings a subscription again at every renewal; a copy equal to the stored one is not written (the
    update ran the churn rollup's trigger each time). A changed one still is."""
    from dunctl.model import Subscription, SyncBatch

    ledger = Ledger.open(tmp_path / "ledger.db")
    try:
        seed(ledger, failed_invoice())

        def upserts(status: str) -> int:
            batch = SyncBatch(subscriptions=[Subscription("sub_1", "cus_1", status)])
            return sum(1 for s in traced(ledger, lambda: ledger.sync.apply_batch(batch, T0))
                       if s.startswith("INSERT INTO subscriptions"))

        assert upserts("past_due") == 1          # the statement alone: no trigger ran
        assert upserts("canceled") > 1           # changed: written, and the trigger ran
        assert ledger.conn.execute("SELECT status FROM subscriptions").fetchone() == ("canceled",)
    finally:
        ledger.close()


def test_invoices_paid_on_the_first_try_are_reconciled_without_reading_their_customers(tmp_path):
    """Most invoices a sync brings were paid at once: they cannot open a case, so reconciling reads neither their
    customer nor their subscription, and marks them all reconciled in one transaction."""
    from dataclasses import replace

    config = load_config(starter(tmp_path))
    ledger = Ledger.open(config.ledger_path)
    try:
        paid = [replace(failed_invoice(f"in_{n}", customer_id=f"cus_{n}"), status="paid", amount_paid=4900,
                        amount_remaining=0, first_failed_at=None, failed_at=None, decline=None, paid_at=T0)
                for n in range(3)]
        seed(ledger, *paid, failed_invoice("in_failed", customer_id="cus_9"))
        statements = traced(ledger, lambda: run_tick(ledger, config, None, build_channels(config, {}),
                                                     T0 + timedelta(minutes=5), sync=False))
        assert ledger.conn.execute("SELECT invoice_id FROM cases").fetchall() == [("in_failed",)]
        assert ledger.conn.execute("SELECT count(*) FROM invoices WHERE pending = 1").fetchone() == (0,)
        customers = [s for s in statements if s.startswith("SELECT * FROM customers WHERE id = ")]
        assert customers == ["SELECT * FROM customers WHERE id = 'cus_9'"]
        assert sum(1 for s in statements if s == "BEGIN IMMEDIATE") <= 5, statements
    finally:
        ledger.close()


def test_the_customers_recent_messages_are_one_query_a_batch_dunning_messages_and_notices_alike(tmp_path):
    """The contact policy's look at what each customer of a batch was sent lately (dunning steps and pre-dunning
    notices) is one query per few hundred customers, not one per kind; every customer is still found."""
    from tests.test_ledger import open_case

    ledger = Ledger.open(tmp_path / "ledger.db")
    try:
        customers = []
        for n in range(260):                       # more than one piece of the IN list (250 a piece, listed twice)
            case_id = open_case(ledger, f"in_{n}")
            action = ledger.journal("actions").claim_action(case_id, "step", "notice", "email", "email", "customer",
                                                            T0, T0, f"k{n}", None)
            ledger.journal("actions").record_result(action, "done", T0 + timedelta(minutes=n % 7), message_ref=None)
            customers.append(f"cus_in_{n}")
        assert len(traced(ledger, lambda: ledger.cases.contacts_of(customers[:200], T0))) == 1
        assert len(traced(ledger, lambda: ledger.cases.contacts_of(customers, T0))) == 2
        found = ledger.cases.contacts_of(customers, T0)
        assert sorted(found) == sorted(customers)
        assert found["cus_in_9"] == [T0 + timedelta(minutes=2)]
    finally:
        ledger.close()


def test_a_tick_that_misses_no_step_does_not_read_when_the_last_tick_ran(tmp_path):
    """When the last tick ran only explains missed steps (`the last tick was 6.9 days ago`, tests/test_tick_core.py):
    the demo's 1,560 ticks missed none and read it 1,560 times (issue #25)."""
    config = load_config(starter(tmp_path))
    ledger = Ledger.open(config.ledger_path)
    try:
        seed(ledger, failed_invoice())
        for hours in (1, 2):
            statements = traced(ledger, lambda: run_tick(ledger, config, None, build_channels(config, {}),
                                                         T0 + timedelta(hours=hours), sync=False))
            assert not [s for s in statements if s.startswith("SELECT now FROM ticks")], statements
    finally:
        ledger.close()


def test_a_sync_that_brings_several_invoices_with_cases_reconciles_them_in_one_transaction(tmp_path):
    """Three invoices with open cases come back from a sync with a second failed attempt: they are followed, marked
    reconciled and their cases scheduled again in one transaction, their cases read in one query (a demo tick had a
    transaction and a read per invoice, and one more for the schedules, issue #25). Each case still follows its
    own invoice."""
    config = load_config(starter(tmp_path))
    ledger = Ledger.open(config.ledger_path)
    ids = ["in_1", "in_2", "in_3"]
    try:
        seed(ledger, *(failed_invoice(i, customer_id=f"cus_{i}") for i in ids))
        run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(minutes=5), sync=False)
        seed(ledger, *(failed_invoice(i, customer_id=f"cus_{i}", attempt_count=2, amount=4900 + n)
                       for n, i in enumerate(ids)), now=T0 + timedelta(minutes=6))
        statements = traced(ledger, lambda: run_tick(ledger, config, None, build_channels(config, {}),
                                                     T0 + timedelta(minutes=10), sync=False))
        # up to the schedule of the cases it touched: one transaction
        scheduled = next(n for n, s in enumerate(statements) if s.startswith("UPDATE cases SET next_due_at"))
        reconciling = statements[:scheduled]
        assert sum(1 for s in reconciling if s.startswith("UPDATE invoices SET pending = 0 WHERE id")) == 3, \
            reconciling
        assert sum(1 for s in reconciling if s.startswith("BEGIN")) == 1, reconciling
        assert sum(1 for s in reconciling if s.startswith("SELECT * FROM cases WHERE id")) == 1, reconciling
        assert ledger.conn.execute("SELECT invoice_id, attempts, amount_remaining FROM cases ORDER BY id").fetchall() \
            == [("in_1", 2, 4900), ("in_2", 2, 4901), ("in_3", 2, 4902)]
        assert ledger.conn.execute("SELECT count(*) FROM invoices WHERE pending = 1").fetchone()[0] == 0
    finally:
        ledger.close()


def test_the_demo_feeds_a_delivered_message_back_without_reading_the_case_s_actions_again(tmp_path):
    """The tick reports each message's recipient, as it recorded it: the demo's driver hands it to the simulated
    customer without reading every action of the case again for each message (issue #25)."""
    from dunctl.simulation.account import SimulatedAccount
    from dunctl.simulation.demo import DemoChannels, Driver, prepare_demo
    from dunctl.simulation.population import build_book
    from dunctl.tick.result import ActionReport, TickResult
    from tests.test_ledger import open_case

    config = load_config(prepare_demo(tmp_path / "demo"))
    ledger = Ledger.open(config.ledger_path)
    try:
        open_case(ledger)
        driver = Driver(config, ledger, SimulatedAccount(build_book(2, 1), seed=1, start=T0), DemoChannels(config, {}))
        result = TickResult(now=T0, actions=[ActionReport("in_1", "notice", "email", "done", recipient="a@x.test")])
        statements = traced(ledger, lambda: driver._feed(result, T0))
        assert driver.messages == 1 and not [s for s in statements if "FROM actions" in s], statements
    finally:
        ledger.close()


def test_the_planner_settings_are_worked_out_once_per_config_and_again_when_it_is_replaced(tmp_path):
    """A demo plans in hundreds of ticks with one config: each tick's context hands out the same (immutable)
    settings; a config whose file was replaced gets its own (issue #25)."""
    from dunctl.tick.context import MONITOR, TickContext

    config = load_config(starter(tmp_path))
    ledger = Ledger.open(config.ledger_path)
    try:
        first = TickContext(ledger, config, None, None, T0).settings
        assert TickContext(ledger, config, None, None, T0 + timedelta(hours=1)).settings is first
        assert TickContext(ledger, config, None, None, T0, mode=MONITOR).settings.monitor and not first.monitor
        dunning = config.file.dunning.model_copy(update={"max_action_tries": first.max_action_tries + 1})
        config.file = config.file.model_copy(update={"dunning": dunning})
        assert TickContext(ledger, config, None, None, T0).settings.max_action_tries == first.max_action_tries + 1
    finally:
        ledger.close()


def test_invoices_paid_on_the_first_try_are_marked_reconciled_without_being_read(tmp_path):
    """A sync brings mostly renewals paid on the first try: they cannot open a case, and reconciling marks them all
    in one statement without reading them (it read and decoded each, then marked each: issue #25). The failed
    one still opens its case."""
    from dataclasses import replace

    config = load_config(starter(tmp_path))
    ledger = Ledger.open(config.ledger_path)
    try:
        paid = [replace(failed_invoice(f"in_p{n}", customer_id=f"cus_p{n}"), status="paid", amount_paid=4900,
                        amount_remaining=0, attempt_count=1, first_failed_at=None, failed_at=None, decline=None)
                for n in range(3)]
        seed(ledger, *paid, failed_invoice("in_f", customer_id="cus_f"))
        statements = traced(ledger, lambda: run_tick(ledger, config, None, build_channels(config, {}),
                                                     T0 + timedelta(minutes=5), sync=False))
        assert len([s for s in statements if s.startswith("UPDATE invoices SET pending = 0")]) == 2, statements
        assert ledger.conn.execute("SELECT count(*) FROM invoices WHERE pending = 1").fetchone()[0] == 0
        assert [row[0] for row in ledger.conn.execute("SELECT invoice_id FROM cases")] == ["in_f"]
    finally:
        ledger.close()


def test_every_invoice_that_may_open_a_case_is_one_reconciling_reads():
    """The SQL rule that spares reconciling the invoices that cannot open a case (ledger/sync.py _RECONCILABLE)
    keeps every invoice `may_open` (tick/reconcile.py) would open one for."""
    import itertools
    import sqlite3

    from dunctl.ledger.records import InvoiceRecord
    from dunctl.ledger.sync import _RECONCILABLE
    from dunctl.tick.reconcile import may_open

    conn = sqlite3.connect(":memory:")
    for status, method, due, attempts, failed in itertools.product(
            ("draft", "open", "paid", "void", "uncollectible"), (None, "charge_automatically", "send_invoice"),
            (None, "2026-12-01T00:00:00Z"), (0, 1, 2), (None, "2026-11-02T14:00:00Z")):
        row = {"id": "in_1", "status": status, "collection_method": method, "due_date": due,
               "attempt_count": attempts, "first_failed_at": failed}
        read = conn.execute(f"SELECT {_RECONCILABLE.format(case='0', i='i')} FROM (SELECT ? AS status, "
                            "? AS collection_method) i", [status, method]).fetchone()[0]
        assert read or not may_open(InvoiceRecord.from_row(row)), row
