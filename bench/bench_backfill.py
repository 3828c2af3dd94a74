"""How long the first sync of a large account takes: a backfill of N failed invoices from the fake Stripe server.

    python bench/bench_backfill.py [--invoices 10000] [--paid 2000] [--rps 20]

Builds a fake Stripe account with N failed invoices (each with its customer, card and subscription) and some
invoices paid on the first try, then runs `dunctl sync`'s path (gateway.sync into a fresh ledger, batch by batch)
through the real stripe SDK over HTTP on 127.0.0.1, at the configured rate limit. Prints the requests made (by
endpoint), the wall time, and invoices per second; then one steady-state sync, which should cost one request.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import stripe  # noqa: E402

from dunctl.ledger import Ledger  # noqa: E402
from dunctl.stripe_gateway import StripeGateway  # noqa: E402
from tests.fakestripe import TEST_KEY, FakeStripe  # noqa: E402

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
DECLINES = ["insufficient_funds", "do_not_honor", "generic_decline", "expired_card", "stolen_card",
            "authentication_required", "card_velocity_exceeded"]


def build(fake: FakeStripe, failed: int, paid: int) -> None:
    span = timedelta(days=50)
    for n in range(failed):
        at = T0 - span + span * n / max(failed, 1)
        if n % 10 == 9:
            fake.fail_invoice(payment_method_type="us_bank_account", failure_code="R01", decline_code=None, at=at,
                              email=f"ap{n}@example.com")
        else:
            fake.fail_invoice(decline_code=DECLINES[n % len(DECLINES)], at=at, email=f"ap{n}@example.com",
                              metered=n % 3 == 0)
    for n in range(paid):
        customer = fake.add_customer(f"ok{n}@example.com", at=T0 - span)
        fake.add_payment_method(customer)
        invoice = fake.create_invoice(customer, amount=2000, at=T0 - span + span * n / max(paid, 1))
        fake.customer_pays(invoice, at=T0 - span + span * n / max(paid, 1))
    fake.set_now(T0)


def serve(conn, failed: int, paid: int) -> None:
    """The fake account, in its own process: the client's figures are not the server's work sharing a GIL."""
    fake = FakeStripe(now=T0 - timedelta(days=60))
    started = time.perf_counter()
    build(fake, failed, paid)
    fake.start()
    fake.reset_counts()
    conn.send((fake.url, time.perf_counter() - started))
    while (command := conn.recv()) != "stop":
        conn.send(dict(fake.counts) if command == "counts" else None)
    fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=10_000, help="failed invoices in the account")
    parser.add_argument("--paid", type=int, default=2_000, help="invoices paid on the first try (listed, skipped)")
    parser.add_argument("--rps", type=float, default=20.0, help="stripe.max_requests_per_second")
    args = parser.parse_args()

    conn, child_conn = multiprocessing.Pipe()
    server = multiprocessing.get_context("fork").Process(target=serve, args=(child_conn, args.invoices, args.paid))
    server.start()
    try:
        url, built = conn.recv()
        with tempfile.TemporaryDirectory() as directory:
            ledger = Ledger.open(Path(directory) / "dunctl.db")
            gateway = StripeGateway(TEST_KEY, api_base=url, max_requests_per_second=args.rps)
            started, cpu_started = time.perf_counter(), time.process_time()
            batches = invoices = 0
            for batch in gateway.sync(None, T0):
                ledger.apply_batch(batch, T0)
                batches += 1
                invoices += len(batch.invoices)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            in_ledger = ledger.db.execute("SELECT count(*) FROM invoices").fetchone()[0]
            gateway_requests = gateway.requests
            conn.send("counts")
            by_endpoint = dict(sorted(conn.recv().items()))
            steady_started = time.perf_counter()
            for batch in gateway.sync(ledger.get_state("cursor"), T0 + timedelta(hours=1)):
                ledger.apply_batch(batch, T0 + timedelta(hours=1))
            steady_wall = time.perf_counter() - steady_started
            conn.send("counts")
            steady = sum(conn.recv().values()) - sum(by_endpoint.values())
            ledger.close()
    finally:
        conn.send("stop")
        server.join()

    requests = sum(by_endpoint.values())
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
          f"{platform.python_version()}, stripe-python {stripe.VERSION}; fake Stripe in another process on 127.0.0.1")
    print(f"account: {args.invoices} failed invoices + {args.paid} paid on the first try (built in {built:.1f} s)")
    print(f"backfill at {args.rps:g} requests/s: {requests} requests ({gateway_requests} counted by the gateway), "
          f"{batches} batches, {wall:.1f} s wall, {invoices / wall:.0f} invoices/s, {in_ledger} invoices in the "
          f"ledger")
    print(f"  of which: dunctl's own CPU (SDK, parsing, ledger writes) {cpu:.1f} s; pacing at the rate limit "
          f"alone needs {max(0.0, (requests - args.rps) / args.rps):.1f} s; the remainder is the fake server rendering pages")
    for endpoint, count in by_endpoint.items():
        print(f"  {endpoint}: {count}")
    print(f"steady state: {steady} request(s), {steady_wall * 1000:.0f} ms")


if __name__ == "__main__":
    main()
