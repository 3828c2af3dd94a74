# Over 500 lines: append-only history: a shipped migration is never edited, moved or split, only followed by the next.
"""The ledger's schema, only ever changed by appending a numbered migration. Never edit a shipped one."""

from __future__ import annotations

import json
import secrets

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from dunctl.ledger.file import SCHEMA
from dunctl.ledger.scripts import run_script as _run   # what shipped migrations call

migrations = Migrations("dunctl")


def _add_columns(db: Database, table: str, *columns: str) -> None:
    """Add each column ("name TYPE ...") to `table`, in order. SQLite keeps each definition's text in the table's
    stored schema, so a shipped migration's definitions are never edited (a new ledger must match an old one)."""
    for column in columns:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


@migrations()
def m001_initial(db: Database) -> None:
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS customers (
            id TEXT PRIMARY KEY,
            name TEXT,
            email TEXT,
            phone TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',      -- JSON object
            preferred_locale TEXT,
            timezone TEXT,
            livemode INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS payment_methods (
            id TEXT PRIMARY KEY,
            customer_id TEXT,
            type TEXT NOT NULL,
            brand TEXT,
            last4 TEXT,
            exp_month INTEGER,
            exp_year INTEGER,
            updated_at TEXT
        );
        CREATE TABLE IF NOT EXISTS subscriptions (
            id TEXT PRIMARY KEY,
            customer_id TEXT NOT NULL,
            status TEXT NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}',
            usage_based INTEGER NOT NULL DEFAULT 0,
            pause_behavior TEXT,
            canceled_at TEXT
        );
        CREATE TABLE IF NOT EXISTS invoices (
            id TEXT PRIMARY KEY,
            customer_id TEXT NOT NULL,
            subscription_id TEXT,
            number TEXT,
            currency TEXT NOT NULL,
            amount_due INTEGER NOT NULL,
            amount_paid INTEGER NOT NULL,
            amount_remaining INTEGER NOT NULL,
            status TEXT NOT NULL,
            billing_reason TEXT,
            collection_method TEXT,
            attempt_count INTEGER NOT NULL DEFAULT 0,
            next_payment_attempt TEXT,
            hosted_invoice_url TEXT,
            customer_email TEXT,
            customer_name TEXT,
            payment_method_id TEXT,
            payment_method_type TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',
            lines TEXT NOT NULL DEFAULT '[]',         -- JSON list, for usage breakdowns in messages
            created_at TEXT NOT NULL,
            first_failed_at TEXT,
            failed_at TEXT,
            decline TEXT,                             -- JSON of the latest failure's raw codes
            failure_type TEXT,
            paid_at TEXT,
            voided_at TEXT,
            uncollectible_at TEXT,
            auto_advance INTEGER,
            livemode INTEGER NOT NULL DEFAULT 0,
            synced_at TEXT NOT NULL,
            pending INTEGER NOT NULL DEFAULT 1        -- changed since cases were last reconciled
        );
        CREATE INDEX IF NOT EXISTS invoices_pending ON invoices(pending) WHERE pending = 1;
        CREATE INDEX IF NOT EXISTS invoices_customer ON invoices(customer_id);

        -- One case per failed invoice. Amounts in the invoice's currency, minor units.
        CREATE TABLE IF NOT EXISTS cases (
            id INTEGER PRIMARY KEY,
            invoice_id TEXT NOT NULL UNIQUE REFERENCES invoices(id),
            customer_id TEXT NOT NULL,
            subscription_id TEXT,
            currency TEXT NOT NULL,
            amount_due INTEGER NOT NULL,
            amount_paid_at_open INTEGER NOT NULL DEFAULT 0,
            amount_remaining INTEGER NOT NULL,
            amount_recovered INTEGER NOT NULL DEFAULT 0,
            segment TEXT NOT NULL,
            sequence TEXT NOT NULL,
            sequence_hash TEXT NOT NULL,
            sequence_def TEXT NOT NULL,               -- JSON of the sequence as it was when the case opened
            failure_type TEXT NOT NULL,               -- current; re-classified when the decline changes
            first_failure_type TEXT NOT NULL,
            decline_code TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,      -- payment attempts so far, the provider's and dunctl's
            state TEXT NOT NULL DEFAULT 'open',       -- open | paused | recovered | exhausted | written_off | voided | closed
            with_person INTEGER NOT NULL DEFAULT 0,   -- escalated to a person (or disputed)
            escalated_at TEXT,
            disputed_at TEXT,
            payment_method_changed_at TEXT,
            first_failed_at TEXT NOT NULL,            -- when the provider saw the first failure
            opened_at TEXT NOT NULL,                  -- when dunctl opened the case
            closed_at TEXT,
            close_reason TEXT,
            recovered_at TEXT,
            recovered_attempt INTEGER,                -- which payment attempt succeeded
            recovered_by TEXT,                        -- retry | provider_retry | customer | unknown
            churned INTEGER NOT NULL DEFAULT 0,       -- the subscription was cancelled by dunning
            next_step TEXT,
            next_due_at TEXT,
            last_action TEXT,
            last_action_at TEXT,
            livemode INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX IF NOT EXISTS cases_due ON cases(next_due_at) WHERE state = 'open';
        CREATE INDEX IF NOT EXISTS cases_state ON cases(state);
        CREATE INDEX IF NOT EXISTS cases_first_failed ON cases(first_failed_at);

        -- One row per executed (or deliberately not executed) step. The unique key is what makes a step
        -- happen once: it is claimed before any effect.
        CREATE TABLE IF NOT EXISTS actions (
            id INTEGER PRIMARY KEY,
            case_id INTEGER NOT NULL REFERENCES cases(id),
            step_id TEXT NOT NULL,
            action TEXT NOT NULL,                     -- email | sms | slack | webhook | retry | escalate | ...
            channel TEXT,                             -- email | sms | slack | webhook | stripe | none
            status TEXT NOT NULL,                     -- claimed | done | failed | unknown | skipped | missed | suppressed
            due_at TEXT NOT NULL,
            claimed_at TEXT,
            finished_at TEXT,
            tries INTEGER NOT NULL DEFAULT 0,
            idempotency_key TEXT NOT NULL,
            recipient TEXT,
            detail TEXT,
            error TEXT,
            request_id TEXT,
            tick_id INTEGER,
            UNIQUE (case_id, step_id)
        );
        CREATE INDEX IF NOT EXISTS actions_attention ON actions(status) WHERE status IN ('failed', 'claimed', 'unknown');
        CREATE INDEX IF NOT EXISTS actions_case ON actions(case_id, finished_at);

        -- The case timeline: append-only.
        CREATE TABLE IF NOT EXISTS timeline (
            id INTEGER PRIMARY KEY,
            case_id INTEGER NOT NULL REFERENCES cases(id),
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            summary TEXT NOT NULL,
            data TEXT
        );
        CREATE INDEX IF NOT EXISTS timeline_case ON timeline(case_id, id);
        CREATE TRIGGER IF NOT EXISTS timeline_no_update BEFORE UPDATE ON timeline
            BEGIN SELECT RAISE(ABORT, 'the case timeline is append-only'); END;
        CREATE TRIGGER IF NOT EXISTS timeline_no_delete BEFORE DELETE ON timeline
            BEGIN SELECT RAISE(ABORT, 'the case timeline is append-only'); END;

        CREATE TABLE IF NOT EXISTS sync_state (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL                       -- JSON
        );
        -- Provider reports that change cases but are not invoice fields (disputes, replaced payment methods).
        CREATE TABLE IF NOT EXISTS signals (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            at TEXT NOT NULL,
            invoice_id TEXT,
            customer_id TEXT,
            detail TEXT,
            source_id TEXT UNIQUE,
            applied INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX IF NOT EXISTS signals_pending ON signals(applied) WHERE applied = 0;
        CREATE TABLE IF NOT EXISTS ticks (
            id INTEGER PRIMARY KEY,
            now TEXT NOT NULL,                        -- the tick's clock
            pid INTEGER,
            dry_run INTEGER NOT NULL DEFAULT 0,
            finished INTEGER NOT NULL DEFAULT 0,
            opened INTEGER NOT NULL DEFAULT 0,
            closed INTEGER NOT NULL DEFAULT 0,
            actions INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0
        );
        """
    )


@migrations()
def m002_report_index(db: Database) -> None:
    # Covers the report's grouped query so 1M cases aggregate from the index instead of sorting the table
    # (bench/bench_report.py: 3.4 s -> 1.6 s). The column order must match dunctl/report.py's GROUP BY.
    db.execute(
        """CREATE INDEX IF NOT EXISTS cases_report ON cases(segment, first_failure_type, sequence, currency,
               substr(first_failed_at, 1, 7), state, first_failed_at, recovered_at, amount_due,
               amount_paid_at_open, amount_recovered, amount_remaining, with_person, attempts, recovered_attempt)""")


@migrations()
def m003_tick_core(db: Database) -> None:
    # Actions get a kind: `step` (a sequence step) or `system` (dunctl's own bookkeeping effects: turning
    # Stripe's retries off, telling a person a held case was recovered or disputed). Their keys no longer
    # share the step ids' namespace through an "@" prefix. SQLite cannot change a UNIQUE constraint in place,
    # so the table is rebuilt once.
    db.executescript(
        """
        CREATE TABLE actions_new (
            id INTEGER PRIMARY KEY,
            case_id INTEGER NOT NULL REFERENCES cases(id),
            kind TEXT NOT NULL DEFAULT 'step',        -- step | system
            step_id TEXT NOT NULL,
            action TEXT NOT NULL,
            channel TEXT,
            audience TEXT,                            -- customer | internal | NULL (not a message)
            status TEXT NOT NULL,                     -- claimed | done | would | failed | resend | unknown | skipped | missed | suppressed
            due_at TEXT NOT NULL,
            claimed_at TEXT,
            finished_at TEXT,
            tries INTEGER NOT NULL DEFAULT 0,
            resends INTEGER NOT NULL DEFAULT 0,       -- times a person chose to run it again (`case resolve`)
            prior_status TEXT,                        -- while claimed again: what it was (to release the claim)
            idempotency_key TEXT NOT NULL,
            recipient TEXT,
            subject TEXT,
            detail TEXT,
            error TEXT,
            request_id TEXT,
            message_ref TEXT,                         -- one delivery shared by several cases' steps (grouped)
            tick_id INTEGER,
            UNIQUE (case_id, kind, step_id)
        );
        INSERT INTO actions_new(id, case_id, kind, step_id, action, channel, status, due_at, claimed_at,
                                finished_at, tries, idempotency_key, recipient, detail, error, request_id, tick_id)
            SELECT id, case_id,
                   CASE WHEN step_id LIKE '@%' THEN 'system' ELSE 'step' END,
                   CASE WHEN step_id LIKE '@%' THEN substr(step_id, 2) ELSE step_id END,
                   action, channel, status, due_at, claimed_at, finished_at, tries, idempotency_key, recipient,
                   detail, error, request_id, tick_id
            FROM actions;
        DROP TABLE actions;
        ALTER TABLE actions_new RENAME TO actions;
        CREATE INDEX actions_attention ON actions(status) WHERE status IN ('failed', 'claimed', 'unknown');
        -- The idle tick looks for orphaned claims; this index answers it without reading other actions.
        CREATE INDEX actions_claimed ON actions(id) WHERE status = 'claimed';
        -- What monitor mode planned (`would`), counted by the report without reading the other actions.
        CREATE INDEX actions_would ON actions(action) WHERE status = 'would';
        CREATE INDEX actions_case ON actions(case_id, finished_at);
        -- What dunctl did, found by its idempotency key (the stale-ledger check against Stripe's events).
        CREATE INDEX actions_key ON actions(idempotency_key);
        -- One conversation per customer: its open cases, and what it was sent lately, by customer.
        CREATE INDEX IF NOT EXISTS cases_customer ON cases(customer_id);

        -- A sequence's definition is stored once per version, not on every case.
        CREATE TABLE IF NOT EXISTS sequence_versions (
            hash TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            definition TEXT NOT NULL                  -- JSON
        );
        INSERT OR IGNORE INTO sequence_versions(hash, name, definition)
            SELECT sequence_hash, sequence, sequence_def FROM cases WHERE sequence_def != '' GROUP BY sequence_hash;
        UPDATE cases SET sequence_def = '' WHERE sequence_def != '';
        """
    )


@migrations()
def m101_stripe_signal_fields(db: Database) -> None:
    # Lifecycle signals (a subscription cancelled or paused outside dunctl, a closed dispute, an inactive mandate)
    # name the subscription or payment method they are about, and carry structured details (won/lost,
    # resumes_at); see dunctl/model.py Signal for each kind.
    columns = {row[1] for row in db.execute("PRAGMA table_info(signals)").fetchall()}
    for name, kind in (("subscription_id", "TEXT"), ("payment_method_id", "TEXT"),
                       ("data", "TEXT NOT NULL DEFAULT '{}'")):
        if name not in columns:
            db.execute(f"ALTER TABLE signals ADD COLUMN {name} {kind}")


@migrations()
def m103_experiments(db: Database) -> None:
    # The experiment and arm a case was assigned when it opened (dunctl/experiments.py); never changed after.
    # NULL for cases outside every experiment. Written defensively: a column may exist from a partial run.
    columns = {row[1] for row in db.execute("PRAGMA table_info(cases)").fetchall()}
    for name in ("experiment", "arm"):
        if name not in columns:
            db.execute(f"ALTER TABLE cases ADD COLUMN {name} TEXT")
    db.execute("CREATE INDEX IF NOT EXISTS cases_experiment ON cases(experiment, arm) WHERE experiment IS NOT NULL")


# -- m102: the report's rollups ------------------------------------------------------------------------------------
# Aggregates the report reads instead of the cases, kept exact by triggers on cases and actions, so no Python
# call site (the tick, a person closing a case, a sync) has to remember them. Each case contributes to one row of
# each rollup; a trigger subtracts the old row's contribution and adds the new one, and deletes rows left at zero.
# dunctl/ledger/views/report.py reads them; its raw-scan functions are the reference they are tested against.

# Whole seconds from first failure to payment, for a row alias (NEW, OLD, c). Must stay textually the same as
# views/report.SECONDS so the expression index below serves its lookups.
_SECONDS_OF = "max(CAST(round((julianday({r}recovered_at) - julianday({r}first_failed_at)) * 86400) AS INTEGER), 0)"
_TOUCH_ACTIONS = "'email', 'sms', 'retry', 'escalate'"
_CREDITED = "CASE a.action WHEN 'email' THEN 'email' WHEN 'sms' THEN 'sms' WHEN 'retry' THEN 'retry' " \
            "WHEN 'escalate' THEN 'person' END"
# The channel credited with a recovered case: its last done touch within the attribution window stored in
# report_settings (views/report.py rebuilds report_channels when a report asks for another window).
_CHANNEL_OF = """coalesce((SELECT {credited} FROM actions a
    WHERE a.case_id = {r}id AND a.status = 'done' AND a.action IN ({touches})
      AND a.finished_at <= {r}recovered_at
      AND a.finished_at >= strftime('%Y-%m-%dT%H:%M:%SZ', {r}recovered_at,
            '-' || (SELECT value FROM report_settings WHERE name = 'attribution_window_seconds') || ' seconds')
    ORDER BY a.finished_at DESC, a.id DESC LIMIT 1), 'no touch')"""


def _rollup_add(r: str) -> str:
    """Statements adding the case row `r` (NEW or OLD) to every rollup but the channel one."""
    seconds = _SECONDS_OF.format(r=r)
    return f"""
        INSERT INTO report_cases VALUES (substr({r}first_failed_at, 1, 10), {r}segment, {r}first_failure_type,
            {r}sequence, {r}currency, {r}state, 1, {r}amount_due - {r}amount_paid_at_open, {r}amount_recovered,
            {r}amount_remaining, {r}with_person)
        ON CONFLICT DO UPDATE SET cases = cases + 1, at_stake = at_stake + excluded.at_stake,
            recovered_amount = recovered_amount + excluded.recovered_amount,
            remaining = remaining + excluded.remaining, with_person = with_person + excluded.with_person;
        INSERT INTO report_attempts VALUES (substr({r}first_failed_at, 1, 10),
            min(max({r}attempts, coalesce({r}recovered_attempt, 0)), 999),
            CASE WHEN {r}state = 'recovered' THEN min(coalesce({r}recovered_attempt, 0), 999) ELSE 0 END, 1)
        ON CONFLICT DO UPDATE SET cases = cases + 1;
        INSERT INTO report_recovery_days SELECT substr({r}first_failed_at, 1, 10), {seconds} / 86400, 1, {seconds}
            WHERE {r}state = 'recovered'
        ON CONFLICT DO UPDATE SET cases = cases + 1, seconds = seconds + excluded.seconds;"""


def _rollup_remove(r: str) -> str:
    seconds = _SECONDS_OF.format(r=r)
    day = f"substr({r}first_failed_at, 1, 10)"
    key = (f"cohort_day = {day} AND segment = {r}segment AND failure_type = {r}first_failure_type "
           f"AND sequence = {r}sequence AND currency = {r}currency AND state = {r}state")
    attempt_key = (f"cohort_day = {day} AND reached = min(max({r}attempts, coalesce({r}recovered_attempt, 0)), 999) "
                   f"AND won_at = CASE WHEN {r}state = 'recovered' "
                   f"THEN min(coalesce({r}recovered_attempt, 0), 999) ELSE 0 END")
    day_key = f"{r}state = 'recovered' AND cohort_day = {day} AND day = {seconds} / 86400"
    return f"""
        UPDATE report_cases SET cases = cases - 1, at_stake = at_stake - ({r}amount_due - {r}amount_paid_at_open),
            recovered_amount = recovered_amount - {r}amount_recovered, remaining = remaining - {r}amount_remaining,
            with_person = with_person - {r}with_person WHERE {key};
        DELETE FROM report_cases WHERE {key} AND cases = 0;
        UPDATE report_attempts SET cases = cases - 1 WHERE {attempt_key};
        DELETE FROM report_attempts WHERE {attempt_key} AND cases = 0;
        UPDATE report_recovery_days SET cases = cases - 1, seconds = seconds - {seconds} WHERE {day_key};
        DELETE FROM report_recovery_days WHERE {day_key} AND cases = 0;"""


def _channel_add(r: str, source: str = "") -> str:
    """Add recovered case `r` to report_channels; `source` selects the row when `r` is a table alias."""
    where = f"{source} AND {r}state = 'recovered'" if source else f"{r}state = 'recovered'"
    frm = "FROM cases c" if source else ""
    return f"""
        INSERT INTO report_channels SELECT substr({r}first_failed_at, 1, 10), {r}currency,
            {_CHANNEL_OF.format(r=r, credited=_CREDITED, touches=_TOUCH_ACTIONS)}, 1, {r}amount_recovered,
            {r}with_person {frm} WHERE {where}
        ON CONFLICT DO UPDATE SET cases = cases + 1, recovered_amount = recovered_amount + excluded.recovered_amount,
            with_person = with_person + excluded.with_person;"""


def _channel_remove(r: str, source: str = "") -> str:
    where = f"{source} AND {r}state = 'recovered'" if source else f"{r}state = 'recovered'"
    frm = "FROM cases c" if source else ""
    key = ("report_channels.cohort_day = k.cohort_day AND report_channels.currency = k.currency "
           "AND report_channels.channel = k.channel")
    return f"""
        UPDATE report_channels SET cases = report_channels.cases - 1,
            recovered_amount = report_channels.recovered_amount - k.recovered_amount,
            with_person = report_channels.with_person - k.with_person
        FROM (SELECT substr({r}first_failed_at, 1, 10) AS cohort_day, {r}currency AS currency,
                     {_CHANNEL_OF.format(r=r, credited=_CREDITED, touches=_TOUCH_ACTIONS)} AS channel,
                     {r}amount_recovered AS recovered_amount, {r}with_person AS with_person
              {frm} WHERE {where}) AS k
        WHERE {key};
        DELETE FROM report_channels WHERE cases = 0;"""


# The columns whose change moves a case between rollup rows or changes its measures.
_ROLLUP_COLUMNS = ("state, segment, sequence, first_failure_type, currency, first_failed_at, amount_due, "
                   "amount_paid_at_open, amount_recovered, amount_remaining, with_person, attempts, recovered_at, "
                   "recovered_attempt")
_DONE_TOUCH = "{r}status = 'done' AND {r}action IN (" + _TOUCH_ACTIONS + ")"
_CASE_RECOVERED = "(SELECT state FROM cases WHERE id = {r}case_id) = 'recovered'"


# The triggers on actions move a recovered case's channel row when one of its done touches comes, changes or goes.
# SQLite stores a trigger's text as written, line breaks too: these rebuild the shipped m102's text exactly.
def _on_touch(event: str, r: str) -> str:
    """A trigger's event and condition: `event` on actions when row `r` is a done touch of a recovered case."""
    return f"{event} ON actions\n        WHEN {_DONE_TOUCH.format(r=r)} AND {_CASE_RECOVERED.format(r=r)}"


_ON_TOUCH_UPDATE = (f"UPDATE OF status, action, finished_at\n        ON actions WHEN ({_DONE_TOUCH.format(r='OLD.')} OR "
                    f"{_DONE_TOUCH.format(r='NEW.')})\n                        AND {_CASE_RECOVERED.format(r='NEW.')}")


def _touch_triggers(on: str, r: str) -> str:
    """Before the change the case leaves its channel row; after it, it joins the one now credited."""
    name = on.split()[0].lower()
    case = f"c.id = {r}case_id"
    return f"""
        CREATE TRIGGER IF NOT EXISTS report_touch_{name}_before BEFORE {on} BEGIN
            {_channel_remove("c.", case)}
        END;
        CREATE TRIGGER IF NOT EXISTS report_touch_{name}_after AFTER {on} BEGIN
            {_channel_add("c.", case)}
        END;"""


@migrations()
def m102_report_rollups(db: Database) -> None:
    _run(db.conn, f"""
        CREATE TABLE IF NOT EXISTS report_settings (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT OR IGNORE INTO report_settings VALUES ('attribution_window_seconds', 259200);

        -- Cases by cohort day of first failure and every breakdown dimension but channel.
        CREATE TABLE IF NOT EXISTS report_cases (
            cohort_day TEXT NOT NULL, segment TEXT NOT NULL, failure_type TEXT NOT NULL, sequence TEXT NOT NULL,
            currency TEXT NOT NULL, state TEXT NOT NULL,
            cases INTEGER NOT NULL, at_stake INTEGER NOT NULL, recovered_amount INTEGER NOT NULL,
            remaining INTEGER NOT NULL, with_person INTEGER NOT NULL,
            PRIMARY KEY (cohort_day, segment, failure_type, sequence, currency, state));
        -- Cases by the furthest payment attempt reached and the attempt that recovered them (0: not recovered).
        CREATE TABLE IF NOT EXISTS report_attempts (
            cohort_day TEXT NOT NULL, reached INTEGER NOT NULL, won_at INTEGER NOT NULL, cases INTEGER NOT NULL,
            PRIMARY KEY (cohort_day, reached, won_at));
        -- Recovered cases by whole days from first failure to payment, with the sum of their seconds.
        CREATE TABLE IF NOT EXISTS report_recovery_days (
            cohort_day TEXT NOT NULL, day INTEGER NOT NULL, cases INTEGER NOT NULL, seconds INTEGER NOT NULL,
            PRIMARY KEY (cohort_day, day));
        -- Recovered cases by the channel credited under the stored attribution window.
        CREATE TABLE IF NOT EXISTS report_channels (
            cohort_day TEXT NOT NULL, currency TEXT NOT NULL, channel TEXT NOT NULL, cases INTEGER NOT NULL,
            recovered_amount INTEGER NOT NULL, with_person INTEGER NOT NULL,
            PRIMARY KEY (cohort_day, currency, channel));
        -- A trigger cannot name the channel row it emptied without computing the channel again: this finds it.
        CREATE INDEX IF NOT EXISTS report_channels_empty ON report_channels(cases) WHERE cases = 0;
        -- Subscriptions by the day they were cancelled ('' when they were not), for churn's denominator.
        CREATE TABLE IF NOT EXISTS report_subscriptions (
            canceled_day TEXT NOT NULL PRIMARY KEY, subscriptions INTEGER NOT NULL);

        -- The median and p90 days to recovery rank the recovered cases of one day: this index holds them in
        -- order of seconds to payment, so a rank is an index range, not a scan of every case.
        CREATE INDEX IF NOT EXISTS cases_recovery_seconds ON cases({_SECONDS_OF.format(r="")}, first_failed_at)
            WHERE state = 'recovered';
        -- Churn reads only the cases that churned, by when they ended.
        CREATE INDEX IF NOT EXISTS cases_churned ON cases(closed_at, subscription_id) WHERE churned = 1;
        CREATE INDEX IF NOT EXISTS subscriptions_canceled ON subscriptions(canceled_at);
        -- `dunctl status`: the open cases, most revenue at risk first, a page at a time without a sort.
        CREATE INDEX IF NOT EXISTS cases_at_risk ON cases(amount_remaining DESC, first_failed_at, id)
            WHERE state IN ('open', 'paused');

        CREATE TRIGGER IF NOT EXISTS report_case_insert AFTER INSERT ON cases BEGIN
            {_rollup_add("NEW.")} {_channel_add("NEW.")}
        END;
        CREATE TRIGGER IF NOT EXISTS report_case_delete AFTER DELETE ON cases BEGIN
            {_rollup_remove("OLD.")} {_channel_remove("OLD.")}
        END;
        CREATE TRIGGER IF NOT EXISTS report_case_update AFTER UPDATE OF {_ROLLUP_COLUMNS} ON cases BEGIN
            {_rollup_remove("OLD.")} {_channel_remove("OLD.")} {_rollup_add("NEW.")} {_channel_add("NEW.")}
        END;

        {_touch_triggers(_on_touch("INSERT", "NEW."), "NEW.")}
        {_touch_triggers(_ON_TOUCH_UPDATE, "NEW.")}
        {_touch_triggers(_on_touch("DELETE", "OLD."), "OLD.")}

        CREATE TRIGGER IF NOT EXISTS report_subscription_insert AFTER INSERT ON subscriptions BEGIN
            INSERT INTO report_subscriptions VALUES (coalesce(substr(NEW.canceled_at, 1, 10), ''), 1)
            ON CONFLICT DO UPDATE SET subscriptions = subscriptions + 1;
        END;
        CREATE TRIGGER IF NOT EXISTS report_subscription_delete AFTER DELETE ON subscriptions BEGIN
            UPDATE report_subscriptions SET subscriptions = subscriptions - 1
            WHERE canceled_day = coalesce(substr(OLD.canceled_at, 1, 10), '');
        END;
        CREATE TRIGGER IF NOT EXISTS report_subscription_update AFTER UPDATE OF canceled_at ON subscriptions BEGIN
            UPDATE report_subscriptions SET subscriptions = subscriptions - 1
            WHERE canceled_day = coalesce(substr(OLD.canceled_at, 1, 10), '');
            INSERT INTO report_subscriptions VALUES (coalesce(substr(NEW.canceled_at, 1, 10), ''), 1)
            ON CONFLICT DO UPDATE SET subscriptions = subscriptions + 1;
        END;
    """)
    rebuild_rollups(db.conn)   # a ledger that already has cases: fill the rollups from them, once


def rebuild_rollups(conn) -> None:
    """Fill every report rollup from the cases and subscriptions, as the triggers would have (set-based)."""
    day = "substr(first_failed_at, 1, 10)"
    seconds = _SECONDS_OF.format(r="")
    _run(conn, f"""
        DELETE FROM report_cases;
        INSERT INTO report_cases
        SELECT {day}, segment, first_failure_type, sequence, currency, state, count(*),
               sum(amount_due - amount_paid_at_open), sum(amount_recovered), sum(amount_remaining), sum(with_person)
        FROM cases GROUP BY 1, 2, 3, 4, 5, 6;
        DELETE FROM report_attempts;
        INSERT INTO report_attempts
        SELECT {day}, min(max(attempts, coalesce(recovered_attempt, 0)), 999),
               CASE WHEN state = 'recovered' THEN min(coalesce(recovered_attempt, 0), 999) ELSE 0 END, count(*)
        FROM cases GROUP BY 1, 2, 3;
        DELETE FROM report_recovery_days;
        INSERT INTO report_recovery_days
        SELECT {day}, {seconds} / 86400, count(*), sum({seconds}) FROM cases WHERE state = 'recovered' GROUP BY 1, 2;
        DELETE FROM report_subscriptions;
        INSERT INTO report_subscriptions
        SELECT coalesce(substr(canceled_at, 1, 10), ''), count(*) FROM subscriptions GROUP BY 1;
    """)
    rebuild_channels(conn)


def rebuild_channels(conn) -> None:
    """Fill report_channels under the attribution window now stored in report_settings."""
    channel = _CHANNEL_OF.format(r="c.", credited=_CREDITED, touches=_TOUCH_ACTIONS)
    _run(conn, f"""
        DELETE FROM report_channels;
        INSERT INTO report_channels
        SELECT cohort_day, currency, channel, count(*), sum(amount_recovered), sum(with_person) FROM (
            SELECT substr(c.first_failed_at, 1, 10) AS cohort_day, c.currency AS currency, {channel} AS channel,
                   c.amount_recovered AS amount_recovered, c.with_person AS with_person
            FROM cases c NOT INDEXED WHERE c.state = 'recovered' LIMIT -1)
        GROUP BY 1, 2, 3;
    """)


@migrations()
def m104_notices(db: Database) -> None:
    # Pre-dunning (dunctl/notices). Subscriptions and customers learn what decides a notice: the current period
    # (the next payment), the licensed amount and interval, the default payment method. `notices_due_at` says when
    # a subscription's notices must be planned again: now when sync changed it (or its customer, or its card),
    # the next usage check for metered ones; NULL when nothing is pending. One row per notice, keyed by
    # (kind, object, period, offset) so each is sent once; `next_due_at` is the one indexed column an idle tick
    # reads, NULL once the notice is finished.
    # usage_preview: JSON of the last upcoming-invoice preview.
    _add_columns(db, "subscriptions", "current_period_start TEXT", "current_period_end TEXT",
                 "default_payment_method TEXT", "interval TEXT", "amount INTEGER", "currency TEXT",
                 "cancel_at_period_end INTEGER NOT NULL DEFAULT 0", "notices_due_at TEXT", "usage_checked_at TEXT",
                 "usage_preview TEXT")
    _add_columns(db, "customers", "default_payment_method TEXT")
    db.executescript(
        """
        CREATE INDEX IF NOT EXISTS subscriptions_notices_due ON subscriptions(notices_due_at)
            WHERE notices_due_at IS NOT NULL;
        CREATE INDEX IF NOT EXISTS subscriptions_customer ON subscriptions(customer_id);

        CREATE TABLE IF NOT EXISTS notices (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,                       -- card_expiring | upcoming_renewal | usage_alert | large_charge
            object_id TEXT NOT NULL,                  -- the payment method (card_expiring) or the subscription
            period TEXT NOT NULL,                     -- the card's expiry (2026-12), or the period's end
            "offset" TEXT NOT NULL,                   -- 14d before, or the usage threshold (75%)
            customer_id TEXT NOT NULL,
            subscription_id TEXT,
            status TEXT NOT NULL DEFAULT 'pending',   -- pending | claimed | done | would | failed | unknown | skipped | cancelled | suppressed
            due_at TEXT NOT NULL,
            next_due_at TEXT,                         -- when a tick should act on it; NULL once finished
            planned_at TEXT NOT NULL,
            claimed_at TEXT,
            finished_at TEXT,
            tries INTEGER NOT NULL DEFAULT 0,
            idempotency_key TEXT NOT NULL,
            recipient TEXT,
            subject TEXT,
            detail TEXT,
            error TEXT,
            data TEXT NOT NULL DEFAULT '{}',          -- JSON: what the template shows (card, amounts, usage)
            tick_id INTEGER,
            UNIQUE (kind, object_id, period, "offset")
        );
        CREATE INDEX IF NOT EXISTS notices_due ON notices(next_due_at) WHERE next_due_at IS NOT NULL;
        CREATE INDEX IF NOT EXISTS notices_claimed ON notices(id) WHERE status = 'claimed';
        CREATE INDEX IF NOT EXISTS notices_customer ON notices(customer_id, id);
        CREATE INDEX IF NOT EXISTS notices_subscription ON notices(subscription_id, status);
        """
    )


@migrations()
def m105_i20_adopt_ledger_id(db: Database) -> None:
    """A random id for this ledger, made once (at creation, or on upgrade): dunctl writes it on the Stripe invoices
    it works, so another ledger (or an older copy of this one) can tell what was already sent (dunctl/adoption.py).
    A backup restored later keeps its id; a new ledger gets a new one."""
    db.execute("INSERT OR IGNORE INTO sync_state(name, value) VALUES ('ledger_id', ?)",
               [json.dumps(f"ldg_{secrets.token_hex(8)}")])


@migrations()
def m106_i20_endings_follow_ups(db: Database) -> None:
    # Effects that follow the end of a case (dunctl/tick/endings.py) and must wait: a thank-you held by quiet
    # hours is `waiting` until its due_at. An idle tick reads this partial index, empty almost always.
    db.execute("CREATE INDEX IF NOT EXISTS actions_waiting ON actions(due_at) WHERE status = 'waiting'")


@migrations()
def m107_i25_perf_invoices_by_subscription(db: Database) -> None:
    # Pre-dunning reads a subscription's last paid invoices (the usual period's cost) each time it plans it:
    # without an index starting with subscription_id that read scanned every invoice, per subscription planned.
    db.execute("CREATE INDEX IF NOT EXISTS invoices_subscription ON invoices(subscription_id, status, created_at)")


@migrations()
def m108_i20_interrupts_started(db: Database) -> None:
    # "Started": written and committed right before an effect leaves dunctl (a send, a Stripe call), with the
    # `outcome` (status only) of the effects acted before it; the full result follows with the batch. A claim a
    # tick left behind without it was never attempted and is given back as due; one with an outcome gets it; one
    # started without an outcome may have happened (`unknown`). Claims left by an older dunctl may have been
    # attempted: they count as started. The unknown
    # ones get their own partial index, so every tick (an idle one too) can count them in one indexed step. A
    # tick records the machine's boot id: its "started" marks survive the process dying but not a power loss
    # (see Ledger.light_transaction), so after a reboot its claims are all taken as started.
    _add_columns(db, "ticks", "boot_id TEXT")
    _add_columns(db, "actions", "started_at TEXT", "outcome TEXT")
    _add_columns(db, "notices", "started_at TEXT", "outcome TEXT")
    db.executescript(
        """
        UPDATE actions SET started_at = claimed_at WHERE status = 'claimed';
        UPDATE notices SET started_at = claimed_at WHERE status = 'claimed';
        CREATE INDEX IF NOT EXISTS actions_unknown ON actions(claimed_at) WHERE status = 'unknown';
        """
    )


@migrations()
def m109_i21_cards(db: Database) -> None:
    """`payment_method_changed_to`: the card a case's customer changed to, which a retry for the new card names
    in invoices.pay (Stripe would otherwise charge the invoice's, then the subscription's default first).
    `held_because`: why a held case waits (Stripe paused the subscription for a payment failure, a dispute on
    one of the customer's charges), shown by `status` and `case show`. `customers.open_disputes`: the
    customer's disputes still open (JSON: dispute id -> what it is), which hold every charge and message."""
    _add_columns(db, "cases", "payment_method_changed_to TEXT", "held_because TEXT")
    _add_columns(db, "customers", "open_disputes TEXT")


@migrations()
def m110_i2x_msgs_b_sms_optouts(db: Database) -> None:
    # A customer who replied STOP to a text: kept apart from the customers table, which every sync rewrites from
    # Stripe (Stripe knows nothing of it). One row per customer and channel; absent means texts are allowed.
    db.execute("CREATE TABLE IF NOT EXISTS optouts (customer_id TEXT NOT NULL, channel TEXT NOT NULL, "
               "at TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (customer_id, channel))")


@migrations()
def m111_recv_net_terms(db: Database) -> None:
    """Net-terms receivables (dunctl/receivables): an invoice's due date and PDF link, indexed so that a tick finds
    the invoices coming due in one step; `holds`: a customer's promise to pay by a date, or a dispute of an
    invoice, which holds that invoice's automated messages until it ends (kept, broken, lifted)."""
    _add_columns(db, "invoices", "due_date TEXT", "invoice_pdf TEXT")
    db.executescript(
        """
        CREATE INDEX IF NOT EXISTS invoices_net_terms ON invoices(collection_method, status, due_date);
        CREATE TABLE IF NOT EXISTS holds (
            id INTEGER PRIMARY KEY, case_id INTEGER NOT NULL, invoice_id TEXT NOT NULL, kind TEXT NOT NULL,
            until TEXT, amount INTEGER, currency TEXT, reason TEXT, created_at TEXT NOT NULL, by TEXT,
            paid_at_start INTEGER NOT NULL DEFAULT 0, ended_at TEXT, outcome TEXT);
        CREATE INDEX IF NOT EXISTS holds_open ON holds(until) WHERE ended_at IS NULL;
        CREATE INDEX IF NOT EXISTS holds_case ON holds(case_id);
        """
    )


@migrations()
def m112_recv2_case_outcome(db: Database) -> None:
    """How a person closed a case (dunctl/receivables/closing.py): `closed_as` collected, settled or written_off
    (NULL: closed without saying); `settled_amount` what came in when it was closed (collected or settled, minor
    units of the case's currency), so the month-end journal books it and the rest as written off."""
    _add_columns(db, "cases", "closed_as TEXT", "settled_amount INTEGER")


@migrations()
def m113_recvfix_payment_time(db: Database) -> None:
    """`invoices.amount_paid_at`: when Stripe recorded the latest rise of the invoice's amount paid (the event's
    `created`, or its latest paid invoice payment's `paid_at`), so the month-end journal dates a partial payment by
    Stripe's clock, not by the tick that saw it."""
    _add_columns(db, "invoices", "amount_paid_at TEXT")


@migrations()
def m114_notices3_plan_basis(db: Database) -> None:
    """`subscriptions.notices_basis`: a digest of the (kind, object, period, offset) of every notice the
    subscription's last planning called for (dunctl/notices/run.py). A planning that calls for the same notices
    writes nothing but when to plan again (and a usage preview fetched for it)."""
    _add_columns(db, "subscriptions", "notices_basis TEXT")


@migrations()
def m115_plan6_notices_due_in_order(db: Database) -> None:
    """`subscriptions_notices_due` holds the subscriptions due for planning in the order a tick plans them (when
    due, then id): reading the first ones sorts nothing (a temporary b-tree, 45k of the 300k instructions of reading
    a tick's three subjects). Left as it is when it already is so (a migration run again)."""
    index = ("CREATE INDEX subscriptions_notices_due ON subscriptions(notices_due_at, id) "
             "WHERE notices_due_at IS NOT NULL")
    found = db.execute("SELECT sql FROM sqlite_master WHERE name = 'subscriptions_notices_due'").fetchone()
    if found is None or found[0] != index:
        db.execute("DROP INDEX IF EXISTS subscriptions_notices_due")
        db.execute(index)


# -- m116: conditions SQLite evaluates per row, without an IN list ------------------------------------------------
# SQLite tests `x IN (<more than two constants>)` against a temporary b-tree it builds each time the expression runs,
# and these run for every row written: the partial index actions_attention's condition (twice for each result the
# executor records, old row and new, and once for each claim) and the WHEN of the six report triggers on actions
# (twice for each result). Measured on one UPDATE: 4.6 us with such a condition, 1.6 with the same test spelled out,
# 1.3 with none. Spelled out as equalities joined by OR: the same truth value for every row (NULL too), the same
# rows in the index, the same trigger bodies (they run only for a recovered case's touch). A query reads the
# index when its WHERE has the index's condition as written (ATTENTION, dunctl/ledger/views/status.py) or one of
# its equalities (dunctl/ledger/quiet.py).
ATTENTION = "(status = 'failed' OR status = 'claimed' OR status = 'unknown')"
_TOUCH_EQUALS = "(" + " OR ".join("{r}action = " + action.strip() for action in _TOUCH_ACTIONS.split(",")) + ")"
_DONE_TOUCH_EQUALS = "{r}status = 'done' AND " + _TOUCH_EQUALS


def _on_touch_equals(event: str, r: str) -> str:
    return f"{event} ON actions\n        WHEN {_DONE_TOUCH_EQUALS.format(r=r)} AND {_CASE_RECOVERED.format(r=r)}"


@migrations()
def m116_mail6_conditions_without_in_lists(db: Database) -> None:
    on_update = (f"UPDATE OF status, action, finished_at\n        ON actions WHEN "
                 f"({_DONE_TOUCH_EQUALS.format(r='OLD.')} OR {_DONE_TOUCH_EQUALS.format(r='NEW.')})\n"
                 f"                        AND {_CASE_RECOVERED.format(r='NEW.')}")
    drop = "".join(f"DROP TRIGGER IF EXISTS report_touch_{name}_{when};\n"
                   for name in ("insert", "update", "delete") for when in ("before", "after"))
    _run(db.conn, f"""
        DROP INDEX IF EXISTS actions_attention;
        CREATE INDEX actions_attention ON actions(status) WHERE {ATTENTION};
        {drop}""" + _touch_triggers(_on_touch_equals("INSERT", "NEW."), "NEW.")
         + _touch_triggers(on_update, "NEW.") + _touch_triggers(_on_touch_equals("DELETE", "OLD."), "OLD."))


def _check_schema_names() -> None:
    """`Ledger.open` decides whether to migrate from dunctl.ledger.SCHEMA without loading this module: a
    migration added here and not there would never run."""
    registered = tuple(m.name for m in migrations._migrations)
    if registered != SCHEMA:
        raise RuntimeError(f"dunctl.ledger.SCHEMA {SCHEMA} differs from the registered migrations {registered}")


_check_schema_names()
