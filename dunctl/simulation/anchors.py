"""What the anchors of dunning publish as the share of failed payments recovered: the figures the demo prints its
own rates next to. Source: ../shared/anchor-figures.md (gathered 2026-11-25 from the anchors' public pages);
keep the two in step. Vendor figures, so bands, not points."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Anchor:
    setup: str
    low: float                    # the band, as fractions of failed payments recovered
    high: float
    who: str                      # who publishes it, and how
    source: str


ANCHORS = (
    Anchor("platform-native tools", 0.40, 0.50, "Churn Buster", "https://churnbuster.io/docs/getting-started"),
    Anchor("specialist tool, median", 0.476, 0.50,
           "Churn Buster median 50%; Paddle 50%+; Butter about 50%; Recurly 47.6% (secondary)",
           "https://churnbuster.io/docs/getting-started"),
    Anchor("top performers", 0.80, 0.95, "Churn Buster", "https://churnbuster.io/docs/getting-started"),
)
ANCHOR_NOTE = ("the anchors count recovered of failed payments (some by amount; windows 25-30 days), so compare "
               "recovered of failed invoices; each figure with its source below")
