"""`dunctl tick` as one call: the checks a tick makes before it touches anything (a damaged page, the moment,
the templates), the gateway, then the tick itself (run.py). The CLI parses options, opens the ledger, calls
`tick_command` and renders its result."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from dunctl.config import Config
from dunctl.gateway import Gateway
from dunctl.ledger import Ledger
from dunctl.ledger.file import quick_check
from dunctl.tick.channels import build_channels
from dunctl.tick.clocks import check_tick_moment, is_live_key
from dunctl.tick.preflight import templates_parse
from dunctl.tick.result import SyncResult, TickResult
from dunctl.tick.run import run_tick


@dataclass(frozen=True)
class TickOptions:
    """What the command line asked of this tick."""

    given: datetime | None = None      # --now, else None: the machine's clock
    dry_run: bool = False
    sync: bool = True
    accept_stale: bool = False
    adopt: bool = False


def tick_command(ledger: Ledger, config: Config, environ: Mapping[str, str], options: TickOptions, wall: datetime,
                 connect: Callable[[Ledger, float], Gateway], progress: Callable[[SyncResult], None] | None = None,
                 interrupted: Callable[[], bool] | None = None) -> TickResult:
    """One tick from the command line. `wall` is the machine's clock, read once by the CLI; `connect` makes the
    gateway for a ledger (the account check records the binding through it: a dry run's is a copy, never the
    file) and the deadline its requests keep to: the tick's own."""
    if ledger.path is not None:
        quick_check(ledger.conn, ledger.path)   # a damaged page stops the tick before it reads or writes
    key = environ.get(config.file.stripe.api_key_env)
    moment = tick_moment(config, ledger, options, wall, key)
    known = ledger.get_state("templates_parsed")
    parsed = templates_parse(config, known_good=known)
    # The tick's budget bounds its Stripe calls too (timeouts, retries, backoff): a Stripe that accepts and never
    # answers cannot hold the ledger's lock past it while cron's next ticks exit 3. One deadline for both, from
    # here (the checks above are the command's, not the tick's work): the tick never starts work its requests no
    # longer have the time for.
    deadline = time.monotonic() + config.file.dunning.tick_budget.total_seconds()
    gateway = connect(ledger.snapshot_in_memory() if options.dry_run else ledger, deadline)
    # Recorded once the account check passed: a refused tick leaves the file as it was, now that closing the
    # ledger checkpoints its write-ahead log into it.
    if parsed != known and not options.dry_run:
        ledger.set_state("templates_parsed", parsed)
    return run_tick(ledger, config, gateway, build_channels(config, environ), moment, dry_run=options.dry_run,
                    sync=options.sync, progress=progress, accept_stale=options.accept_stale, adopt=options.adopt,
                    wall=wall if options.given is None or is_live_key(key)
                    else None,   # a test key's --now travels in time: Stripe's clock is not the tick's
                    interrupted=interrupted, deadline=deadline)


def tick_moment(config: Config, ledger: Ledger, options: TickOptions, wall: datetime, key: str | None) -> datetime:
    """The tick's moment (--now, else the machine's clock), refused when it goes back before the last tick, or
    with a live key runs ahead of the machine's clock, before anything is written. The simulated account (a demo
    ledger) keeps a free --now."""
    simulated = ledger.get_state("account_mode") == "simulated"
    return check_tick_moment(options.given, wall, ledger.last_tick_at(), live_key=is_live_key(key) and not simulated,
                             dry_run=options.dry_run)
