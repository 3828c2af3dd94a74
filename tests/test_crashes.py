"""Exactly once under crashes and faults: real `dunctl tick` processes killed with SIGKILL at random moments,
a real SMTP server and the fake Stripe server on loopback. Bounded in count and time; seeded, so repeatable."""

import random
import time
from collections import Counter
from datetime import timedelta

from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.stripe.gateway import StripeGateway
from dunctl.tick import build_channels, run_tick
from tests.fakestripe import TEST_KEY, FakeStripe, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, at, customer, dunctl_process, failed_invoice, open_engine_ledger, seed, starter
from tests.test_concurrency import SlowSmtpServer

PAY = "POST /v1/invoices/:id/pay"


def kill_mid_send(config, when, rng, sent, *, kills, deadline, env=None):
    """Start ticks and SIGKILL each once it has sent 1 to 6 messages (`sent()` counts them at the server), a random
    moment later, until one finishes by itself or the kills run out. Returns (kills, sent before each kill)."""
    killed, landed = 0, []
    while time.time() < deadline:
        started = sent()
        process = dunctl_process(config, "tick", "--no-sync", "--now", when.isoformat(), env=env)
        if killed < kills:
            target = started + rng.randint(1, 6)
            while sent() < target and process.poll() is None and time.time() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.03))
            if process.poll() is None:
                process.kill()
                process.wait()
                killed += 1
                landed.append(sent() - started)
                continue
        process.wait(timeout=60)
        if process.returncode in (0, 1):
            return killed, landed
    raise AssertionError("the ticks never finished")


def test_ticks_killed_while_sending_lose_nothing_silently_and_send_nothing_twice(tmp_path):
    rng = random.Random(7)
    with SlowSmtpServer(delay=0.02) as smtp:
        config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp.host, "port": smtp.port}})
        ledger = open_engine_ledger(config)
        # 8 kills after at most 6 messages each: 60 invoices leave every kill mid-send (150 showed it no better)
        seed(ledger, *[failed_invoice(f"in_{i}", customer_id=f"cus_{i}") for i in range(60)],
             customers=[customer(f"cus_{i}", email=f"c{i}@example.com") for i in range(60)])
        killed, landed = kill_mid_send(config, at("31m"), rng, lambda: len(smtp.received), kills=8,
                                       deadline=time.time() + 90)
        received = Counter(r.rcpt_tos[0] for r in smtp.received)
    assert killed == 8 and min(landed) >= 1                                  # every kill landed mid-send
    assert max(received.values()) == 1                                        # nothing twice
    notices = {c["invoice_id"]: a for c in ledger.cases.listed() for a in ledger.actions(c["id"])}
    assert set(notices) == {f"in_{i}" for i in range(60)}                      # nothing forgotten
    for invoice_id, action in notices.items():
        address = f"c{invoice_id[3:]}@example.com"
        assert action["status"] in ("done", "unknown"), action
        if action["status"] == "done":
            assert received[address] == 1                                     # done means delivered
    unknown = [a for a in notices.values() if a["status"] == "unknown"]
    assert len(unknown) <= killed                                             # at most the one in flight per kill


def test_ticks_killed_on_the_retry_path_charge_each_invoice_once(tmp_path, fake_stripe):
    rng = random.Random(11)
    config = starter(tmp_path, **{"stripe.retries": "dunctl", "stripe.api_base": fake_stripe.url})
    env = {"STRIPE_API_KEY": TEST_KEY}
    fake_stripe.set_now(T0)
    invoices = [fake_stripe.fail_invoice(at=T0, email=f"c{i}@example.com") for i in range(12)]
    fake_stripe.set_now(at("1h"))
    first = dunctl_process(config, "tick", "--now", at("1h").isoformat(), env=env)
    assert first.wait(timeout=60) == 0, first.stderr.read()
    for invoice in invoices:
        fake_stripe.next_payment_succeeds(invoice, True)
    fake_stripe.slow(PAY, 0.15)                     # a tick takes seconds: the kills land mid-call
    killed, landed = 0, []
    for n in range(5):                              # a tick every 40 minutes, each killed after 1 or 2 retries
        when = at("2d1h") + timedelta(minutes=40 * n)
        fake_stripe.set_now(when)
        started = fake_stripe.count(PAY)
        target, deadline = started + rng.randint(1, 2), time.time() + 30
        process = dunctl_process(config, "tick", "--now", when.isoformat(), env=env)
        while fake_stripe.count(PAY) < target and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.15))            # within the next call, or between two
        if process.poll() is None:
            process.kill()
            killed += 1
            landed.append(fake_stripe.count(PAY) - started)
        process.wait(timeout=60)
    for n in range(3):                              # interrupted Stripe calls are tried again with the same key
        when = at("2d7h") + timedelta(minutes=40 * n)
        fake_stripe.set_now(when)
        last = dunctl_process(config, "tick", "--now", when.isoformat(), env=env)
        assert last.wait(timeout=60) in (0, 1), last.stderr.read()
    assert killed >= 3 and min(landed) >= 1                                  # each kill landed among the retries
    for invoice in invoices:
        charges = [c for c in fake_stripe.charges_of(invoice) if c["status"] == "succeeded"]
        assert len(charges) == 1, invoice                                     # exactly one charge each
        assert fake_stripe.invoice(invoice)["status"] == "paid"
    ledger = open_engine_ledger(config)
    assert {c["state"] for c in ledger.cases.listed(include_ended=True)} == {"recovered"}
    assert ledger.actions_with_status("unknown") == []                       # a Stripe call is tried again instead


WRITES = (PAY, "POST /v1/invoices/:id")   # dunctl's writes in these 20 days: retries, Stripe's retries turned off
BURST = 7                                  # answers failed in a row: more than the gateway retries (6) within a call


def landed(fake) -> Counter:
    """Where the injected faults landed: on a retry (pay), another write, or a read (the sync's, mostly)."""
    return Counter("pay" if path.endswith("/pay") else "write" if method != "GET" else "read"
                   for method, path, status in fake.log if status in (429, 500))


def run_world(tmp_path, fake, faults: float, seed_: int, aim: frozenset[int] = frozenset()) -> dict:
    """The same account and the same 20 days of ticks every 6 hours (every 3 showed it no better, at 1.5x the CPU;
    the faults still land on 11 retries, 19 other writes and 47 reads), with a share of Stripe's answers (any
    request, one at a time) turned into 429s and 500s; and in half of the ticks `aim` names (those that wrote in
    the fault-free world) a burst on dunctl's writes long enough to fail the call, dropped with the tick if it did
    not write. Returns what the ledger ended up with, the hours that wrote, and where the faults landed."""
    rng, dice = random.Random(seed_), random.Random(seed_)
    path = starter(tmp_path, **{"stripe.retries": "dunctl", "stripe.api_base": fake.url})
    config = load_config(path)
    ledger = Ledger.open(config.ledger_path)
    gateway = StripeGateway(TEST_KEY, api_base=fake.url, sleep=lambda seconds: None)
    fake.set_now(T0)
    invoices = [fake.fail_invoice(at=T0, email=f"c{i}@example.com", amount=1000 + i) for i in range(6)]
    wrote = set()
    for hour in range(1, 20 * 24, 6):
        now = T0 + timedelta(hours=hour)
        fake.set_now(now)
        if hour == 49:
            for invoice in invoices[:3]:
                fake.next_payment_succeeds(invoice, True)
        fake.fail_share(faults, dice)
        if hour in aim and rng.random() < 0.5:
            for route in WRITES:
                fake.inject(rng.choice([429, 500]), times=BURST, route=route)
        before = len(fake.log)
        run_tick(ledger, config, gateway, build_channels(config, {}), now)
        fake.calm()
        if any(method == "POST" for method, _, _ in fake.log[before:]):
            wrote.add(hour)
    ends = {invoices.index(c["invoice_id"]): (c["state"], c["recovered_by"]) for c in ledger.cases.listed(include_ended=True)}
    # The notes on Stripe's invoices (mark-*) are left out: they follow the account's binding, which a fault on
    # the first tick's account check delays by a tick, so the first message may go un-noted in the faulty world.
    steps = {(invoices.index(c["invoice_id"]), a["step_id"]): a["status"]
             for c in ledger.cases.listed(include_ended=True) for a in ledger.actions(c["id"])
             if not a["step_id"].startswith("mark-")}
    charges = [len([x for x in fake.charges_of(i) if x["status"] == "succeeded"]) for i in invoices]
    ledger.close()
    return {"ends": ends, "steps": steps, "charges": charges, "wrote": frozenset(wrote), "landed": landed(fake)}


def test_a_quarter_of_stripes_answers_failing_converges_to_the_fault_free_ledger(tmp_path):
    with FakeStripe() as calm, FakeStripe() as stormy:
        clean = run_world(tmp_path / "clean", calm, 0.0, 7)
        faulty = run_world(tmp_path / "faulty", stormy, 0.25, 7, aim=clean["wrote"])
    # the faults landed on dunctl's own writes too, a burst failing a retry outright, not only on the sync
    assert faulty["landed"]["pay"] >= BURST and faulty["landed"]["write"] >= BURST and faulty["landed"]["read"] >= 20
    assert not clean["landed"]
    assert faulty["ends"] == clean["ends"]
    assert faulty["charges"] == clean["charges"] == [1, 1, 1, 0, 0, 0]
    assert faulty["steps"] == clean["steps"]


def test_eight_ticks_at_once_never_duplicate_a_message(tmp_path):
    with SlowSmtpServer(delay=0.2) as smtp:
        config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp.host, "port": smtp.port}})
        ledger = open_engine_ledger(config)
        seed(ledger, *[failed_invoice(f"in_{i}", customer_id=f"cus_{i}") for i in range(6)],
             customers=[customer(f"cus_{i}", email=f"c{i}@example.com") for i in range(6)])
        processes = [dunctl_process(config, "tick", "--no-sync", "--now", at("31m").isoformat()) for _ in range(8)]
        codes = [p.wait(timeout=60) for p in processes]
    assert codes.count(0) >= 1 and set(codes) <= {0, 3}
    assert sorted(r.rcpt_tos[0] for r in smtp.received) == sorted(f"c{i}@example.com" for i in range(6))
