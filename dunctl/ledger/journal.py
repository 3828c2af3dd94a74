"""Journals: where the executor claims an effect before it acts and records what happened after (the `Journal`
protocol of dunctl/effect.py). One per table of effects: `actions` for a case's steps and dunctl's own effects
around a case, `notices` for pre-dunning notices. Both keep the same columns for the exactly-once protocol
(status, claimed_at, started_at, outcome, tries, tick_id), so the started mark and the orphan sweep are written
once, here; what differs (what a claim inserts, what a result updates) is each journal's own."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dunctl.clock import from_iso, iso

if TYPE_CHECKING:
    from dunctl.effect import Effect, Outcome

ACTIONS_JOURNAL, NOTICES_JOURNAL = "actions", "notices"   # the journals by name: their tables
STRIPE_KEY_LIFETIME = timedelta(hours=23)   # Stripe keeps idempotency keys at least 24 hours
NOTED = "recorded after the tick stopped, from the outcome noted when the next {} started"
# A batch's new claims in one INSERT (`ActionJournal.claim_many`), this many rows a statement at most (ten
# parameters each, well within SQLite's limit)
_ROWS_PER_INSERT = 100
_CLAIM_ROW = "(?, ?, ?, ?, ?, ?, 'claimed', ?, ?, 1, ?, ?)"
_CLAIM_ROWS = """INSERT OR IGNORE INTO actions(case_id, kind, step_id, action, channel, audience, status, due_at,
                   claimed_at, tries, idempotency_key, tick_id) VALUES {} RETURNING id, case_id, kind, step_id"""


def _claim_row(effect: Effect, at: str, tick_id: int | None) -> tuple:
    return (effect.case_id, effect.kind, effect.name, effect.action, effect.channel, effect.audience,
            iso(effect.due_at), at, effect.key, tick_id)


class _Journal:
    table: str

    def __init__(self, ledger):
        """`ledger`: the Ledger it is part of (not named here: the ledger imports its journals)."""
        self.ledger = ledger
        self.conn = ledger.conn

    def claim(self, effect: Effect, now: datetime, tick_id: int | None) -> int | None:
        raise NotImplementedError

    def claim_many(self, effects: list[Effect], now: datetime, tick_id: int | None) -> list[int | None]:
        """`claim` for each effect, in order."""
        return [self.claim(effect, now, tick_id) for effect in effects]

    def mark_started(self, now: datetime, started: list[int], noted: list[tuple[int, str]]) -> None:
        """Claimed effects about to leave dunctl (a send, a Stripe call), and the outcomes (status only) of those
        acted since the last such write, all on rows of the batch's claims. Committed before the effect, so a
        tick that dies later leaves only this one without an outcome, and the claims without a mark are known
        never to have been tried. Nothing here is indexed: a write of a page or two."""
        at = iso(now)
        # one statement for both (each row sets one of the two columns): a call into SQLite per message saved
        self.conn.executemany(f"UPDATE {self.table} SET started_at = coalesce(?, started_at), "
                              "outcome = coalesce(?, outcome) WHERE id = ?",
                              [(at, None, i) for i in started] + [(None, s, i) for i, s in noted])

    def orphans(self) -> list[dict]:
        """Effects claimed by a tick that never recorded a result (it died between claim and result)."""
        return list(self.ledger.rows(f"SELECT * FROM {self.table} INDEXED BY {self.table}_claimed "
                                     "WHERE status = 'claimed'"))

    def settle(self, now: datetime) -> None:
        """`settle_orphans` in a transaction of its own, when there are any: a tick's look is then one indexed read
        instead of a write transaction (the tick's lock keeps any other tick from claiming meanwhile)."""
        if self.orphans():
            with self.ledger.transaction():
                self.settle_orphans(now)

    def settle_orphans(self, now: datetime) -> None:
        """Claims left by a tick that died between claim and result. One never started (the executor marks an
        effect started right before it leaves dunctl) was never attempted: given back, due as before. One whose
        outcome a later effect's start noted gets that outcome. The one left, started without an outcome, may or
        may not have happened: `unknown`, visible, never re-sent until a person says so. After a reboot a light
        "started" mark may be lost (`Ledger.settles_by_started`): every claim of that tick counts as started.
        Call inside a transaction."""
        for row in self.orphans():
            if row["started_at"] is None and self.ledger.settles_by_started(row["tick_id"]):
                self.release(row["id"])
            elif self._tried_again(row, now):
                continue
            elif row["outcome"] is not None:
                self._settle_noted(row, now)
            else:
                self._settle_unknown(row, now)

    def _tried_again(self, row: dict, now: datetime) -> bool:
        return False

    def release(self, claim_id: int) -> None:
        raise NotImplementedError

    def _settle_noted(self, row: dict, now: datetime) -> None:
        raise NotImplementedError

    def _settle_unknown(self, row: dict, now: datetime) -> None:
        raise NotImplementedError


class ActionJournal(_Journal):
    """A case's sequence steps and dunctl's own effects around a case (the `actions` table, unique per (case,
    kind, step))."""

    table = ACTIONS_JOURNAL

    def claim(self, effect: Effect, now: datetime, tick_id: int | None) -> int | None:
        return self.claim_action(effect.case_id, effect.kind, effect.name, effect.action, effect.channel,
                                 effect.audience, effect.due_at, now, effect.key, tick_id)

    def claim_many(self, effects: list[Effect], now: datetime, tick_id: int | None) -> list[int | None]:
        """`claim` for each effect, in order: the effects never claimed before (most of a tick's) in one statement,
        not one each; those already in the table (a failed one tried again, a `would` now live) as `claim` does."""
        claimed, fresh, seen = [None] * len(effects), {}, set()
        for n, e in enumerate(effects):
            if (e.case_id, e.kind, e.name) not in seen:    # the same step twice: the second finds it claimed
                seen.add((e.case_id, e.kind, e.name))
                fresh[e.case_id, e.kind, e.name] = n
        if len(fresh) == 1 and len(effects) == 1:      # a batch of one: the plain claim (no rows to match)
            return [self.claim(effects[0], now, tick_id)]
        at, pending = iso(now), list(fresh.items())
        for start in range(0, len(pending), _ROWS_PER_INSERT):
            piece = pending[start:start + _ROWS_PER_INSERT]
            values = [value for _, n in piece for value in _claim_row(effects[n], at, tick_id)]
            # ids are given in the order of the rows (as one INSERT each gave them); RETURNING's order is not
            # promised, so each id is matched by its step
            for claim_id, case_id, kind, step_id in self.conn.execute(
                    _CLAIM_ROWS.format(", ".join([_CLAIM_ROW] * len(piece))), values):
                claimed[fresh.pop((case_id, kind, step_id))] = claim_id
        for n in fresh.values():     # already in the table: claimed again if it may be (or not at all)
            e = effects[n]
            claimed[n] = self._claim_again(e.case_id, e.kind, e.name, e.key, now, tick_id)
        return claimed

    def claim_action(self, case_id: int, kind: str, step_id: str, action: str, channel: str | None,
                     audience: str | None, due_at: datetime, now: datetime, key: str,
                     tick_id: int | None) -> int | None:
        """Claim a step before any effect. Returns the action id, or None when the step is already claimed or
        finished. A failed action is re-claimed for another try; a `would` (planned in monitor mode) is
        claimed for real once the config is live."""
        cursor = self.conn.execute(
            """INSERT OR IGNORE INTO actions(case_id, kind, step_id, action, channel, audience, status, due_at,
                 claimed_at, tries, idempotency_key, tick_id) VALUES (?, ?, ?, ?, ?, ?, 'claimed', ?, ?, 1, ?, ?)""",
            [case_id, kind, step_id, action, channel, audience, iso(due_at), iso(now), key, tick_id])
        if cursor.rowcount == 1:
            return cursor.lastrowid
        return self._claim_again(case_id, kind, step_id, key, now, tick_id)

    def _claim_again(self, case_id: int, kind: str, step_id: str, key: str, now: datetime,
                     tick_id: int | None) -> int | None:
        row = self.conn.execute(
            """UPDATE actions SET prior_status = status, status = 'claimed', claimed_at = ?, tries = tries + 1,
                 tick_id = ?, idempotency_key = ?, error = NULL, started_at = NULL, outcome = NULL
               WHERE case_id = ? AND kind = ? AND step_id = ? AND status IN ('failed', 'would', 'resend', 'waiting')
               RETURNING id""",
            [iso(now), tick_id, key, case_id, kind, step_id]).fetchone()
        return row[0] if row else None

    def release(self, claim_id: int) -> None:
        """Give back a claim whose effect was never attempted (the tick stopped first): as if never claimed."""
        self.conn.execute("DELETE FROM actions WHERE id = ? AND status = 'claimed' AND prior_status IS NULL",
                          [claim_id])
        self.conn.execute("UPDATE actions SET status = prior_status, prior_status = NULL, tries = tries - 1 "
                          "WHERE id = ? AND status = 'claimed'", [claim_id])

    def record_many(self, results: list[tuple[int, Effect, Outcome]], now: datetime) -> None:
        """Every result (and each case's last action) in one statement each."""
        self.record_rows([(claim_id, outcome.status, outcome.detail or None, outcome.error, outcome.recipient,
                           outcome.subject, outcome.request_id, outcome.message_ref)
                          for claim_id, _, outcome in results], now)
        self.ledger.cases.set_last_actions([(effect.case_id, f"{effect.name}: {outcome.status}")
                                      for _, effect, outcome in results
                                      if effect.kind == "step" or outcome.status == "failed"], now)

    def record_result(self, action_id: int, status: str, now: datetime, detail: str | None = None,
                      error: str | None = None, recipient: str | None = None, subject: str | None = None,
                      request_id: str | None = None, message_ref: str | None = None) -> None:
        self.record_rows([(action_id, status, detail, error, recipient, subject, request_id, message_ref)], now)

    def record_rows(self, results: Iterable[tuple], now: datetime) -> None:
        """Several results at once, each (action id, status, detail, error, recipient, subject, request id,
        message ref), all finished at `now`: one statement for a batch."""
        finished = iso(now)
        self.conn.executemany(
            """UPDATE actions SET status = ?, prior_status = NULL, finished_at = ?, detail = coalesce(?, detail),
                 message_ref = coalesce(?, message_ref), error = ?,
                 recipient = coalesce(?, recipient), subject = coalesce(?, subject),
                 request_id = coalesce(?, request_id) WHERE id = ?""",
            [(status, finished, detail, message_ref, error, recipient, subject, request_id, action_id)
             for action_id, status, detail, error, recipient, subject, request_id, message_ref in results])

    def _tried_again(self, row: dict, now: datetime) -> bool:
        """A Stripe call carries an idempotency key, and Stripe answers a repeat of it with the first result: such a
        claim is tried again with the same key (within the key's lifetime), so a retry charges once and its
        consequences are recorded."""
        claimed = from_iso(row["claimed_at"])
        if row["channel"] != "stripe" or claimed is None or now - claimed >= STRIPE_KEY_LIFETIME:
            return False
        self.record_interrupted(row["id"], claimed, "interrupted before its result was recorded; tried again with "
                                                    "the same idempotency key, which Stripe answers with the first "
                                                    "result")
        return True

    def record_interrupted(self, action_id: int, claimed_at: datetime, error: str) -> None:
        """A Stripe call cut off by a crash, to be made again under the same idempotency key: failed, due again,
        and not counted as a try (a crash that stops a batch would otherwise use up the tries of every action
        it had claimed; the key's lifetime bounds how long it is tried again)."""
        self.conn.execute("UPDATE actions SET status = 'failed', prior_status = NULL, finished_at = ?, error = ?, "
                          "tries = max(tries - 1, 0) WHERE id = ?", [iso(claimed_at), error, action_id])

    def _settle_noted(self, row: dict, now: datetime) -> None:
        status = row["outcome"]
        note = NOTED.format("effect")
        self.record_result(row["id"], status, now, detail=note,
                           error="the tick stopped before recording its details"
                           if status in ("failed", "unknown") else None)
        self.ledger.cases.add_timeline(row["case_id"], now, "action", f"{row['step_id']} ({row['action']}) {status}: "
                                                                f"{note}")

    def _settle_unknown(self, row: dict, now: datetime) -> None:
        self.record_result(row["id"], "unknown", now,
                           error="the tick stopped while this action was in flight; it may or may not have "
                                 "happened and will not be re-sent: check, then `dunctl case resolve`")
        self.ledger.cases.add_timeline(row["case_id"], now, "unknown",
                                 f"{row['step_id']} ({row['action']}) outcome unknown: not re-sent")


class NoticeJournal(_Journal):
    """Pre-dunning notices (the `notices` table, unique per (kind, object, period, offset)): planned rows, claimed
    when due, due again after a failure while tries are left."""

    table = NOTICES_JOURNAL

    def claim(self, effect: Effect, now: datetime, tick_id: int | None) -> int | None:
        """Claim a notice before sending it. None when another tick claimed or finished it first."""
        row = self.conn.execute(
            """UPDATE notices SET status = 'claimed', claimed_at = ?, tries = tries + 1, tick_id = ?, error = NULL,
                 started_at = NULL, outcome = NULL
               WHERE id = ? AND status IN ('pending', 'failed') RETURNING id""",
            [iso(now), tick_id, effect.notice_id]).fetchone()
        return row[0] if row else None

    def release(self, claim_id: int) -> None:
        """Give back a notice's claim that was never attempted (the tick stopped first): due again next tick."""
        self.conn.execute("UPDATE notices SET status = 'pending', tries = tries - 1 WHERE id = ? "
                          "AND status = 'claimed'", [claim_id])

    def record_many(self, results: list[tuple[int, Effect, Outcome]], now: datetime) -> None:
        for claim_id, effect, outcome in results:
            self.record_result(claim_id, outcome.status, now, detail=outcome.detail or None, error=outcome.error,
                               recipient=outcome.recipient, subject=outcome.subject, retry_at=effect.retry_at)

    def record_result(self, notice_id: int, status: str, now: datetime, *, detail: str | None = None,
                      error: str | None = None, recipient: str | None = None, subject: str | None = None,
                      retry_at: datetime | None = None) -> None:
        """A claimed notice's outcome. `retry_at`: when a failed one is tried again (None: never again)."""
        self.conn.execute(
            """UPDATE notices SET status = ?, finished_at = ?, next_due_at = ?, detail = coalesce(?, detail),
                 error = ?, recipient = coalesce(?, recipient), subject = coalesce(?, subject) WHERE id = ?""",
            [status, iso(now), iso(retry_at) if status == "failed" else None, detail, error, recipient, subject,
             notice_id])

    def _settle_noted(self, row: dict, now: datetime) -> None:
        """A noted failure was not sent: due again, as if never claimed."""
        if row["outcome"] == "failed":
            self.release(row["id"])
        else:
            self.record_result(row["id"], row["outcome"], now, detail=NOTED.format("notice"))

    def _settle_unknown(self, row: dict, now: datetime) -> None:
        self.record_result(row["id"], "unknown", now,
                           error="the tick stopped while this notice was in flight; it may or may not have been "
                                 "sent and will not be re-sent")


JOURNALS: dict[str, type[_Journal]] = {ACTIONS_JOURNAL: ActionJournal, NOTICES_JOURNAL: NoticeJournal}
