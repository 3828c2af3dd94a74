"""dunctl's side of Stripe (stripe-python 16): the gateway and what it is made of.

- `gateway.py`: StripeGateway, the `Gateway` protocol (dunctl/gateway.py) on a real account: the actions;
- `sync.py`: the sync (backfill, then events), for the gateway's `sync` and `sync_subscriptions`;
- `client.py`: requests: the SDK's client set up, the rate, retries, the tick's budget, errors, whole reads;
- `cursor.py`: where the next sync resumes (stored in the ledger as an opaque dict);
- `events.py`: one handler per event type followed (EVENT_HANDLERS), and the types listed (EVENT_TYPES);
- `convert.py`: Stripe JSON -> dunctl records, with no requests.

Nothing is imported here, so importing one part costs only that part. Inside the package `dunctl`, `import
stripe` still means the SDK (absolute imports; tests/test_stripe_events.py checks it).
"""
