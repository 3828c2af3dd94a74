"""Which clock a tick may act on (issue 20, defects 3 and 9).

A tick's moment decides irreversible steps (cancel, pause, charge), so a wrong moment is refused before it acts:

- `--now` earlier than the last tick the ledger recorded (or a system clock set back) is refused on any account:
  the ledger would plan against a past it has already acted beyond.
- With a live-mode key, `--now` more than a few minutes ahead of the machine's clock is refused unless the tick
  is a dry run: a typo in a date must not cancel real subscriptions. Test keys and the simulated account keep a
  free `--now` ahead (tests and rehearsals travel in time, as Stripe's test clocks do).
- The machine's clock itself is compared with Stripe's (the `Date` header of Stripe's answers): a machine clock
  off by more than a few minutes (a restored VM, an NTP step) stops the tick after its sync, before any effect.

Pure functions of the instants they are given: the CLI reads the wall clock once and hands it in.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dunctl.clock import iso
from dunctl.errors import UsageError

# How far --now may run ahead of the machine's clock on a live account, and how far the machine's clock may be
# from Stripe's: a few minutes covers a slow first request (the Date is read from Stripe's first answer, the
# machine's clock when the command started) and Date's one-second resolution, and nothing a cron slip needs.
MAX_AHEAD = timedelta(minutes=5)
MAX_SKEW = timedelta(minutes=5)
LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")


class ClockRefused(UsageError):
    """The tick's clock cannot be trusted to act: nothing irreversible ran. Exit 2: a person must fix the
    clock or the command; running it again unchanged gives the same answer."""


def is_live_key(key: str | None) -> bool:
    return bool(key) and key.strip().startswith(LIVE_KEY_PREFIXES)


def check_tick_moment(now: datetime | None, wall: datetime, last_tick: datetime | None, *, live_key: bool,
                      dry_run: bool) -> datetime:
    """The tick's moment (`now`, the --now given, else the machine's clock `wall`), refused when it goes back
    before the last tick, or (live key, not a dry run) runs ahead of the machine's clock by more than MAX_AHEAD.
    Called before the tick changes the ledger."""
    which = "--now" if now is not None else "the system clock"
    now = wall if now is None else now
    if last_tick is not None and now < last_tick:
        raise ClockRefused(f"refusing to tick at {iso(now)} ({which}): the ledger's last tick ran at "
                           f"{iso(last_tick)}, later; a tick never goes back in time — check the date given "
                           f"or the machine's clock")
    if live_key and not dry_run and now - wall > MAX_AHEAD:
        raise ClockRefused(f"refusing --now {iso(now)} with a live Stripe key: it is {_span(now - wall)} ahead of "
                           f"the machine's clock ({iso(wall)}); to rehearse a future moment, add --dry-run")
    return now


def check_stripe_clock(wall: datetime, stripe_date: datetime | None) -> None:
    """Refuse to act when the machine's clock and Stripe's (None: no Stripe answer seen, nothing to compare)
    differ by more than MAX_SKEW."""
    if stripe_date is None:
        return
    skew = wall - stripe_date
    if abs(skew) <= MAX_SKEW:
        return
    side = "ahead of" if skew > timedelta(0) else "behind"
    raise ClockRefused(f"the machine's clock ({iso(wall)}) is {_span(abs(skew))} {side} Stripe's "
                       f"({iso(stripe_date)}): synced, but no action taken; set the machine's time (NTP) and "
                       f"run the tick again")


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"
