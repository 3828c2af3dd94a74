from __future__ import annotations

from typing import Annotated

import typer

from dunctl.cli.common import JsonOption, NowOption, environ, err, handles_errors, load, now_from, open_ledger, out, \
    print_json, sync_progress
from dunctl.cli.gateway import make_gateway
from dunctl.tick import build_channels, sync_and_reconcile


@handles_errors
def sync(
    full: Annotated[bool, typer.Option("--full", help="Backfill from invoices instead of following events.")] = False,
    now: NowOption = None,
    accept_stale: Annotated[bool, typer.Option("--accept-stale-ledger",
                                               help="Adopt a ledger older than the Stripe account (restored from "
                                                    "a backup) knowingly.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Pull changes from Stripe into the ledger and open or close cases (no steps are run)."""
    config = load()
    with open_ledger(config) as ledger:
        with sync_progress() as progress:
            result = sync_and_reconcile(ledger, config, make_gateway(config, environ(), ledger=ledger), now_from(now), full=full,
                                        progress=progress, channels=build_channels(config, environ()),
                                        accept_stale=accept_stale)
        for line in result.taken_over:
            err.print(line, markup=False)
        if as_json:
            print_json(result.__dict__)
            return
        out.print(f"{result.requests} request(s), {result.events} event(s); invoices: {result.invoices_new} new, "
                  f"{result.invoices_updated} updated; cases: {result.cases_opened} opened, {result.cases_closed} closed",
                  markup=False)
