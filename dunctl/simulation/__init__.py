"""A simulated Stripe account and a synthetic book of customers, behind the same Gateway seam as the real Stripe
sync: what `dunctl demo` and `dunctl simulate` run on. No network, no Stripe key, deterministic for a seed."""
