"""What every part of one tick shares: the ledger, the config, the provider, the channels and the clock."""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dunctl.clock import iso
from dunctl.config import Config, quiet_window
from dunctl.gateway import Gateway
from dunctl.ledger import Ledger
from dunctl.ledger import quiet
from dunctl.receivables.terms import lead, takes_net_terms
from dunctl.tick.channels import TRANSPORTS, ChannelSet

if TYPE_CHECKING:
    from dunctl.planner import ContactPolicy, Settings

LIVE, MONITOR, DRY_RUN = "live", "monitor", "dry_run"

# The parts of a tick (TickContext.waits) that look at everything again after a write: the first ones asked
# before the sync and after it (a sync that wrote), with the rest of the tick's questions still to come.
_LOOK_AGAIN = frozenset({"claimed_actions", "holds_end", "signals", "invoices", "cases"})


@dataclass
class TickContext:
    ledger: Ledger
    config: Config
    gateway: Gateway | None
    channels: ChannelSet | None
    now: datetime
    mode: str = LIVE            # live | monitor (record `would`, persistently) | dry_run (nothing kept)
    tick_id: int | None = None
    adopt: bool = False         # take over invoices another ledger works (dunctl/adoption.py)
    interrupted: Callable[[], bool] = lambda: False   # asked to stop (the CLI's SIGINT/SIGTERM handler)
    # How a case's effects are prepared: the action registry (tick/actions.py), which imports most of the tick, so
    # the tick that runs it hands it in (tick/run.py) instead of the effects importing it.
    prepare_case: Callable | None = None
    # When the tick's budget ends (time.monotonic()): the CLI's, shared with the gateway's requests so the two
    # never disagree about the time left; None: `dunning.tick_budget` from when the context is made.
    deadline: float | None = None

    def __post_init__(self):
        self.dunctl_retries = self.config.file.stripe.retries == "dunctl"
        self._templates = None
        # The tick's budget is a duration, measured on the monotonic clock (never the date: that is `now`).
        if self.deadline is None:
            self.deadline = time.monotonic() + self.config.file.dunning.tick_budget.total_seconds()
        self._failures_in_a_row: dict[str, int] = {}
        self.skipped_channels: set[str] = set()
        self._waiting: quiet.Waiting | None = None

    def waits(self, what: str):
        """Does anything wait for this part of the tick (`what`: a field of dunctl.ledger.quiet.Waiting)? One
        statement answers every part, taken again once something was written since, when the question is one of
        the tick's first (claims before the sync, reconciling after it: most parts are still to ask); a later part
        asked after a write (planning notices wrote, then: notices due? unknown?) asks its own query alone, a
        third to a tenth of the whole look. A tick that does nothing takes the look once instead of a query a part."""
        look = self._waiting
        current = look is not None and look.changes == self.ledger.conn.total_changes
        if current and getattr(look, what) is not None:
            return getattr(look, what)
        if what not in _LOOK_AGAIN:
            value = quiet.ask(self.ledger.conn, what, self._look_params)
            if current:
                self._waiting = look._replace(**{what: value})
            return value
        look = self._waiting = quiet.look(self.ledger.conn, self._look_params)
        return getattr(look, what)

    @functools.cached_property
    def _look_params(self) -> dict:
        dunning = self.config.file.dunning
        return quiet.params(self.now, self.now - dunning.action_retry_after, dunning.max_action_tries)

    def wrote(self, changes: int, parts: frozenset[str]) -> None:
        """A write that began at `changes` (the connection's total_changes) and can change only these parts of what
        waits (fields of dunctl.ledger.quiet.Waiting): a look current before it still answers the others, which
        are then not asked again (planning notices moved only subscriptions' next planning, in most ticks that
        plan: the notices due and the actions unknown were two statements more). Parts it changed are asked again
        (None), when the tick asks them."""
        look = self._waiting
        if look is not None and look.changes == changes:
            self._waiting = look._replace(changes=self.ledger.conn.total_changes, **dict.fromkeys(parts))

    @functools.cached_property
    def settings(self) -> Settings:
        """The planner's settings, built when something is planned (an idle tick never loads the planner), once
        per config a process loads (`_per_config`): a demo plans in 736 of its ticks with one config."""
        monitor = self.mode == MONITOR
        return _per_config(self.config, ("settings", monitor), lambda: planner_settings(self.config, monitor))

    @functools.cached_property
    def coming_due_before(self) -> str | None:
        """Net-terms invoices due before this time (ISO text) have their case opened now; None when no segment
        takes them. Once per tick, not on each of its reconciles."""
        ahead = net_terms_lead(self.config)
        return None if ahead is None else iso(self.now + ahead)

    @functools.cached_property
    def sequences(self):
        """The sequences as they were when each case opened, parsed once per version for the whole tick."""
        from dunctl.tick.schedule import Sequences   # lazy: see dunctl/lazy.py

        return Sequences(self.ledger)

    def over_budget(self) -> bool:
        return time.monotonic() > self.deadline

    def should_stop(self) -> bool:
        """Take no new work: the budget ran out, or the tick was asked to stop. What is left stays due."""
        return self.interrupted() or self.over_budget()

    def channel_result(self, channel: str | None, failed: bool) -> None:
        """The circuit breaker: a channel that keeps failing is skipped for the rest of this tick."""
        if channel is None:
            return
        count = self._failures_in_a_row.get(channel, 0) + 1 if failed else 0
        self._failures_in_a_row[channel] = count
        if count >= self.config.file.dunning.channel_failures_before_skip:
            self.skipped_channels.add(channel)

    @property
    def acts(self) -> bool:
        """Does this tick send and write to the provider? Only live ticks do."""
        return self.mode == LIVE

    @property
    def templates(self):
        if self._templates is None:
            from dunctl.messages import Templates   # lazy: see dunctl/lazy.py

            self._templates = Templates.for_dir(self.config.templates_dir)
        return self._templates


# (id(config), what) -> (the config, its file, its sequences, the value): worked out once per config a process
# loads (a demo ticks 1,560 times with one), again if either part is replaced. (A Config is unhashable: keyed by
# id, and the weak reference tells a config from a later one that reuses the id.)
_PER_CONFIG: dict[tuple, tuple] = {}


def _per_config(config: Config, what, build: Callable[[], object]):
    """`build()`, worked out once per config a process loads and `what`, again if either part of the config is
    replaced (what it is built from is immutable: a frozen dataclass, a duration)."""
    known = _PER_CONFIG.get((id(config), what))
    if known is not None and known[0]() is config and known[1] is config.file and known[2] is config.sequences:
        return known[3]
    value = build()
    if len(_PER_CONFIG) > 64:
        _PER_CONFIG.clear()
    _PER_CONFIG[id(config), what] = (weakref.ref(config), config.file, config.sequences, value)
    return value


def net_terms_lead(config: Config) -> timedelta | None:
    """How long before its due date a net-terms invoice's case opens (receivables/terms.py `lead`); None when no
    segment takes net-terms invoices."""
    return _per_config(config, "lead", lambda: lead(config) if any(takes_net_terms(segment)
                                                                   for segment in config.file.segments) else None)


def planner_settings(config: Config, monitor: bool = False) -> Settings:
    from dunctl.planner import Settings   # lazy: see dunctl/lazy.py

    dunning, sender = config.file.dunning, config.file.sender
    return Settings(grace=dunning.grace, max_action_tries=dunning.max_action_tries,
                    action_retry_after=dunning.action_retry_after,
                    quiet_hours=quiet_window(sender.quiet_hours) if sender.quiet_hours else None,
                    timezone=sender.timezone,
                    channels=frozenset(name for name in TRANSPORTS
                                       if getattr(config.file.channels, name) is not None),
                    escalation_channel=config.file.escalation.channel,
                    notice_before_suspension=dunning.notice_before_suspension,
                    monitor=monitor, contact=contact_policy(config),
                    retry_on_update=config.file.stripe.retry_on_update)


def contact_policy(config: Config) -> ContactPolicy | None:
    from dunctl.planner import ContactPolicy   # lazy: see dunctl/lazy.py

    contact = config.file.contact
    if contact is None:
        return None
    caps = tuple((channel, c.max_per_case) for channel, c in sorted(contact.channels.items())
                 if c.max_per_case is not None)
    return ContactPolicy(max_per_week=contact.max_per_week, min_gap=contact.min_gap, max_per_case=caps)
