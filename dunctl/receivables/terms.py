"""Which segments take net-terms invoices, and how long before its due date such an invoice's case opens: read
from the config alone, by the tick (dunctl/receivables/tick.py) and by reconciling (dunctl/receivables/cases.py)."""

from __future__ import annotations

from datetime import timedelta


def takes_net_terms(segment) -> bool:
    """Does this segment opt in to net-terms invoices? Only a rule that names `collection_method` does."""
    return bool(segment.when) and "collection_method" in segment.when


def lead(config) -> timedelta:
    """How long before its due date a net-terms invoice's case opens: the earliest step (`-7d`) of any sequence a
    net-terms segment (or an experiment arm on one) can fix on a case; zero when none comes before it."""
    earliest = 0
    for segment in config.file.segments:
        if not takes_net_terms(segment):
            continue
        sequences = {segment.sequence} | {arm.sequence for e in config.file.experiments
                                          if e.segment in (None, segment.name) for arm in e.arms}
        for name in sequences:
            for step in getattr(config.sequences.get(name), "steps", ()):
                earliest = min(earliest, step.at.minutes)
    return timedelta(minutes=-earliest)
