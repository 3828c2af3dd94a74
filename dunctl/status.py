"""`dunctl status` in one call: the page of cases, the recovery headline, the notices due soon and the running
experiments, read from one open ledger. The CLI renders it (dunctl/cli/status.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dunctl.cases import Status, status
from dunctl.ledger import Ledger
from dunctl.ledger.views.experiments import experiment_status
from dunctl.notices.views import UpcomingNotice, upcoming
from dunctl.report import Headline, headline


@dataclass
class StatusPage:
    cases: Status                       # streamed: read while it is rendered, with the ledger still open
    headline: Headline
    notices: list[UpcomingNotice]
    experiments: list[dict]


def status_page(ledger: Ledger, now: datetime, include_ended: bool = False, *, segment: str | None = None,
                state: str | None = None, failure_type: str | None = None, limit: int | None = None,
                fx=None) -> StatusPage:
    """Everything `status` shows. Refuses an unknown state or failure type (UsageError) before reading."""
    cases = status(ledger, now, include_ended, segment=segment, state=state, failure_type=failure_type,
                   limit=limit, fx=fx)
    return StatusPage(cases=cases, headline=headline(ledger, now), notices=upcoming(ledger, now),
                      experiments=experiment_status(ledger))
