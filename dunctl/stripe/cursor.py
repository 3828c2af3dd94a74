"""The sync cursor: where the next Stripe sync resumes. The ledger stores it (as `to_dict()`) with every batch and
never looks inside; only the gateway reads it back (`Cursor.load`).

Two phases. `backfill`: the invoices created since `since` are being listed a page at a time, `after` the last
page applied. `events`: the events since the cursor's second (`event_created`) are listed; the ids of that second
already applied are its `edge`, until that second is `settled` (listed SETTLED after it, by Stripe's clock, so
no event can still be stamped with it). See dunctl/stripe/sync.py for why the events are listed by time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dunctl.clock import from_iso, from_unix, iso

CURSOR_VERSION = 1
# Stripe keeps events 30 days; a cursor checked longer ago than this may have missed some, so backfill instead.
EVENT_WINDOW = timedelta(days=29)
# Stripe stamps each event with the second it was created in: a second listed this long after it gets no more
# events, so its events as listed then are all it will ever have (the margin covers clock skew between the two).
SETTLED = timedelta(seconds=60)

# What each phase stores: a cursor written by an earlier dunctl of the same CURSOR_VERSION reads back the same.
_STORED = {"backfill": ("event", "event_created", "edge", "settled", "since", "started_at", "after", "pages"),
           "events": ("event", "event_created", "edge", "settled", "since", "checked_at")}


@dataclass
class Cursor:
    phase: str = "events"
    since: int | None = None              # unix seconds: the backfill's (and a cursor-less events list's) start
    event: str | None = None              # the newest event applied
    event_created: int | None = None      # its second
    edge: list[str] = field(default_factory=list)   # the ids of that second already applied
    settled: bool = False                 # that second can get no more events: list only later ones
    started_at: str | None = None         # backfill: when it began (by the sync's clock)
    after: str | None = None              # backfill: the last invoice of the last page applied
    pages: int = 0                        # backfill: pages applied
    checked_at: str | None = None         # events: when the events were last listed (by the sync's clock)

    @classmethod
    def load(cls, stored: dict | None) -> Cursor | None:
        """The cursor the ledger stored, or None (none yet, or written by another cursor version)."""
        if not stored or stored.get("v") != CURSOR_VERSION:
            return None
        names = set(cls.__dataclass_fields__)
        return cls(**{name: value for name, value in stored.items() if name in names and value is not None})

    @classmethod
    def backfill(cls, since: int, now: datetime) -> Cursor:
        return cls(phase="backfill", since=since, started_at=iso(now))

    def to_dict(self) -> dict:
        return {"v": CURSOR_VERSION, "phase": self.phase,
                **{name: getattr(self, name) for name in _STORED.get(self.phase, _STORED["events"])}}

    def stale(self, now: datetime) -> bool:
        """Checked longer ago than Stripe keeps events (or never): some may be gone, so backfill instead."""
        checked = from_iso(self.checked_at or self.started_at)
        return checked is None or now - checked > EVENT_WINDOW

    def backfilled(self) -> Cursor:
        """The events cursor a finished backfill hands over: it checked everything as of when it began."""
        return Cursor(phase="events", event=self.event, event_created=self.event_created, edge=list(self.edge),
                      settled=self.settled, since=self.since, checked_at=self.started_at)

    def listing(self) -> tuple[dict, set[str]]:
        """The `created` filter of the next events list, and the ids in it already applied."""
        edge = set(self.edge or ([self.event] if self.event else []))
        if self.event_created is None:
            return {"gte": self.since}, edge
        if self.settled:
            return {"gt": self.event_created}, set()     # that second's events were all applied
        return {"gte": self.event_created}, edge

    def advanced(self, events: list[dict], now: datetime, listed_at: datetime | None, whole: bool = True) -> Cursor:
        """The cursor after `events` (oldest first, as listed from `listed_at` by Stripe's clock), checked at `now`:
        the newest event, its second, and every event id of that second already applied (`edge`), unless that
        second was settled when listed and `whole` (no event of it listed after these, in a batch still to come)."""
        state = Cursor(**vars(self))
        state.edge = list(self.edge)
        if events:
            newest = events[-1]
            edge = [e["id"] for e in events if e["created"] == newest["created"]]
            if self.event_created == newest["created"] and not self.settled:
                earlier = self.edge or ([self.event] if self.event else [])
                edge = list(dict.fromkeys(earlier + edge))
            state.event, state.event_created, state.edge, state.settled = newest["id"], newest["created"], edge, False
        if whole and state.event_created is not None and settled(state.event_created, listed_at):
            state.edge, state.settled = [], True     # listed after its second settled: every event of it was seen
        state.checked_at = iso(now)
        return state


def settled(second: int, stripe_time: datetime | None) -> bool:
    """Can Stripe still create events stamped `second`? Judged by Stripe's clock, never dunctl's; unknown: yes."""
    return stripe_time is not None and stripe_time - from_unix(second) >= SETTLED
