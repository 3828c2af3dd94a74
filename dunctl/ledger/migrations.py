"""The ledger's schema, only ever changed by appending a numbered migration. Never edit a shipped one."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("dunctl")


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
        CREATE INDEX actions_case ON actions(case_id, finished_at);
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
def m104_notices(db: Database) -> None:
    # Pre-dunning (dunctl/notices). Subscriptions and customers learn what decides a notice: the current period
    # (the next payment), the licensed amount and interval, the default payment method. `notices_due_at` says when
    # a subscription's notices must be planned again: now when sync changed it (or its customer, or its card),
    # the next usage check for metered ones; NULL when nothing is pending. One row per notice, keyed by
    # (kind, object, period, offset) so each is sent once; `next_due_at` is the one indexed column an idle tick
    # reads, NULL once the notice is finished.
    db.executescript(
        """
        ALTER TABLE subscriptions ADD COLUMN current_period_start TEXT;
        ALTER TABLE subscriptions ADD COLUMN current_period_end TEXT;
        ALTER TABLE subscriptions ADD COLUMN default_payment_method TEXT;
        ALTER TABLE subscriptions ADD COLUMN interval TEXT;
        ALTER TABLE subscriptions ADD COLUMN amount INTEGER;
        ALTER TABLE subscriptions ADD COLUMN currency TEXT;
        ALTER TABLE subscriptions ADD COLUMN cancel_at_period_end INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE subscriptions ADD COLUMN notices_due_at TEXT;
        ALTER TABLE subscriptions ADD COLUMN usage_checked_at TEXT;
        ALTER TABLE subscriptions ADD COLUMN usage_preview TEXT;          -- JSON of the last upcoming-invoice preview
        ALTER TABLE customers ADD COLUMN default_payment_method TEXT;
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
