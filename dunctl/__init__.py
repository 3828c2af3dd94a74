"""dunctl: automated dunning for Stripe, run from cron."""

__version__ = "0.1.0"
