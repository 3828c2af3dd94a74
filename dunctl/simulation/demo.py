"""The core of `dunctl demo` and `dunctl simulate`: run the real engine, tick by tick on a cron-like schedule,
against the simulated account, and measure what happened. Returns dataclasses; the CLI renders them.

The schedule is cron's `7 * * * *`: a tick at seven minutes past every simulated hour. After each tick the
driver tells the account what dunctl did that customers (or a person) would notice: each email and SMS sent,
each escalation, so the simulated customers can respond.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import mean, median

from dunctl.channels import Delivery
from dunctl.clock import from_iso, iso
from dunctl.config import Config, load_config
from dunctl.tick import ChannelSet, TickResult, build_channels, run_tick
from dunctl.errors import UsageError
from dunctl.ledger import ENDED_STATES, Ledger
from dunctl.scaffold import write_starter
from dunctl.simulation.account import SimulatedAccount, Stats
from dunctl.simulation.assumptions import DEFAULT, Assumptions
from dunctl.simulation.population import build_book

# A Monday, so that business days and weekends fall the same way on every run. Fixed, never the wall clock:
# the same seed must give the same numbers.
DEFAULT_START = datetime(2026, 11, 2, tzinfo=timezone.utc)
TICK_EVERY = timedelta(hours=1)
TICK_MINUTE = 7                     # cron: 7 * * * *
DEFAULT_SEED = 42
CUSTOMER_ACTIONS = ("email", "sms")
Progress = Callable[[int, int, datetime], None]


# -- results ----------------------------------------------------------------------------------------------------


@dataclass
class CurrencyOutcome:
    currency: str
    cases: int
    recovered: int
    amount_due: int               # minor units, this currency only
    amount_recovered: int
    amount_rate: float | None


@dataclass
class Outcome:
    """What one run of the engine on the simulated account achieved."""

    name: str
    customers: int
    invoices_billed: int
    failed_invoices: int          # cases opened
    recovered: int
    open: int                     # still open (or paused) at the end of the run
    ended_by_state: dict[str, int]
    recovery_rate: float | None   # recovered / failed invoices (cases still open count as not recovered)
    currencies: list[CurrencyOutcome]
    days_to_recovery_median: float | None
    days_to_recovery_mean: float | None
    recovered_after_day_14: float | None  # share of recoveries more than 14 days after the first failure
    messages_sent: int            # emails and SMS that went out
    messages_per_recovered: float | None
    retries_dunctl: int           # payment attempts dunctl made
    retries_stripe: int           # attempts Stripe's Smart Retries made
    handed_to_people: int         # cases escalated to a person or disputed
    churned: int                  # subscriptions cancelled by dunning
    recovered_by: dict[str, int]  # who collected: retry, provider_retry, email, sms, person, suspension, organic...
    ticks: int
    actions: int
    failed_actions: int
    notices_sent: int = 0         # pre-dunning notices (dunctl/notices)
    cards_updated_after_notice: int = 0

    @property
    def retries_used(self) -> int:
        return self.retries_dunctl + self.retries_stripe


@dataclass
class DemoResult:
    directory: Path
    config_path: Path
    ledger_path: Path
    outbox: Path
    seed: int
    start: datetime
    end: datetime
    outcome: Outcome
    headline: object | None = None   # dunctl.report.Headline
    example_invoice: str | None = None   # a case worth reading with `dunctl case show`
    last_tick: datetime | None = None


@dataclass
class SimulationResult:
    seed: int
    customers: int
    start: datetime
    billing_days: int
    follow_up_days: int
    outcomes: list[Outcome] = field(default_factory=list)


# -- channels for `simulate`: nothing leaves the machine ----------------------------------------------------------


class RecordingChannels(ChannelSet):
    """Every channel the config names, delivering nowhere: `simulate` may run a production config without
    emailing, texting or posting to anyone."""

    def email(self, message, key, now) -> Delivery:
        to = message.to if isinstance(message.to, str) else ", ".join(message.to)
        return Delivery(f"simulated email to {to}")

    def sms(self, message, key) -> Delivery:
        return Delivery(f"simulated sms to {message.to}")

    def slack(self, text, key) -> Delivery:
        return Delivery("simulated slack post")

    def webhook(self, event, payload, key, now) -> Delivery:
        return Delivery(f"simulated webhook {event}")


# -- the driver ---------------------------------------------------------------------------------------------------


_NAME = re.compile(r"\{\{[^}]*customer\.(first_name|name)")
_WHAT = re.compile(r"\{\{[^}]*(amount|invoice\.number|invoice\.lines|line\.description)")


def personalised_templates(config: Config) -> frozenset[str]:
    """Templates that name the customer and say what the charge was for: the guide's 'personalised' email, as
    opposed to generic templated messaging."""
    names = set()
    for path in config.templates_dir.glob("*.txt.j2"):
        text = path.read_text()
        if _NAME.search(text) and _WHAT.search(text):
            names.add(path.name.split(".")[0])
    return frozenset(names)


class Driver:
    """Runs ticks on a schedule and feeds what dunctl did back to the simulated customers."""

    def __init__(self, config: Config, ledger: Ledger, account: SimulatedAccount, channels: ChannelSet):
        self.config, self.ledger, self.account, self.channels = config, ledger, account, channels
        self.personalised = personalised_templates(config)
        self.ticks = self.actions = self.failed_actions = self.messages = self.notices = 0
        self.last_tick: datetime | None = None
        self._steps: dict[int, dict[str, dict]] = {}

    def run(self, start: datetime, end: datetime, progress: Progress | None = None) -> None:
        first = start.replace(minute=TICK_MINUTE, second=0, microsecond=0)
        if first < start:
            first += TICK_EVERY
        total = int((end - first) / TICK_EVERY) + 1 if end >= first else 0
        for n in range(total):
            now = first + n * TICK_EVERY
            self.account.advance_to(now)
            # A simulated account is always worked live: monitor mode guards real accounts, not simulations.
            result = run_tick(self.ledger, self.config, self.account, self.channels, now, mode="live")
            self._feed(result, now)
            self.last_tick = now
            if progress:
                progress(n + 1, total, now)

    def _feed(self, result: TickResult, now: datetime) -> None:
        self.ticks += 1
        self.actions += len(result.actions)
        self.failed_actions += len(result.failed)
        for report in result.actions:
            if report.status != "done":
                continue
            if report.step.startswith("notice:"):          # pre-dunning (dunctl/notices)
                self.notices += 1
                self.account.notice_delivered(report.step[7:].split("@")[0], report.invoice_id, now)
            elif report.action in CUSTOMER_ACTIONS:
                self.messages += 1
                self._message(report.invoice_id, report.step, report.action, now)
            elif report.action == "escalate":
                self.account.escalated(report.invoice_id, now)

    def _message(self, invoice_id: str, step_id: str, action: str, now: datetime) -> None:
        case = self.ledger.case_for_invoice(invoice_id)
        if case is None:
            return
        row = next((a for a in self.ledger.actions(case["id"]) if a["step_id"] == step_id), None)
        recipient = row["recipient"] if row else None
        customer = self.ledger.customer(case["customer_id"]) or {}
        manager = json.loads(customer.get("metadata") or "{}").get("account_manager_email")
        if recipient and manager and recipient == manager:
            self.account.escalated(invoice_id, now)      # the account manager picks it up
            return
        template = self._step(case).get(step_id, {}).get("template")
        self.account.message_delivered(invoice_id, action, now, recipient=recipient,
                                       personalised=template in self.personalised)

    def _step(self, case: dict) -> dict[str, dict]:
        if case["id"] not in self._steps:
            steps = self.ledger.sequence_definition(case["sequence_hash"]).get("steps", [])
            self._steps[case["id"]] = {s["id"]: s for s in steps}
        return self._steps[case["id"]]

    def outcome(self, name: str, customers: int) -> Outcome:
        return measure(name, self.ledger, self.account.stats, customers, self)


def measure(name: str, ledger: Ledger, stats: Stats, customers: int, driver: Driver) -> Outcome:
    cases = ledger.cases(include_ended=True)
    recovered = [c for c in cases if c["state"] == "recovered"]
    days = sorted((from_iso(c["recovered_at"]) - from_iso(c["first_failed_at"])).total_seconds() / 86400
                  for c in recovered if c["recovered_at"])
    by_state: dict[str, int] = {}
    for c in cases:
        by_state[c["state"]] = by_state.get(c["state"], 0) + 1
    currencies = []
    for code in sorted({c["currency"] for c in cases}):
        mine = [c for c in cases if c["currency"] == code]
        due = sum(c["amount_due"] - c["amount_paid_at_open"] for c in mine)
        got = sum(c["amount_recovered"] for c in mine)
        currencies.append(CurrencyOutcome(code, len(mine), sum(c["state"] == "recovered" for c in mine), due, got,
                                          round(got / due, 4) if due else None))
    return Outcome(
        name=name, customers=customers, invoices_billed=stats.invoices, failed_invoices=len(cases),
        recovered=len(recovered), open=sum(c["state"] not in ENDED_STATES for c in cases), ended_by_state=by_state,
        recovery_rate=round(len(recovered) / len(cases), 4) if cases else None, currencies=currencies,
        days_to_recovery_median=round(median(days), 2) if days else None,
        days_to_recovery_mean=round(mean(days), 2) if days else None,
        recovered_after_day_14=round(sum(d > 14 for d in days) / len(days), 4) if days else None,
        messages_sent=driver.messages,
        messages_per_recovered=round(driver.messages / len(recovered), 2) if recovered else None,
        retries_dunctl=stats.dunctl_retries, retries_stripe=stats.provider_retries,
        handed_to_people=sum(bool(c["with_person"]) for c in cases), churned=sum(bool(c["churned"]) for c in cases),
        recovered_by=dict(sorted(stats.recovered_by.items())), ticks=driver.ticks, actions=driver.actions,
        failed_actions=driver.failed_actions, notices_sent=driver.notices,
        cards_updated_after_notice=stats.responses["card updated after an expiry notice"])


def _fast(ledger: Ledger) -> Ledger:
    # A simulated ledger is rebuilt by re-running; it does not need every commit on disk before the next.
    ledger.db.conn.execute("PRAGMA synchronous = OFF")
    return ledger


def simulate_config(config: Config, ledger: Ledger, channels: ChannelSet, *, name: str, customers: int, seed: int,
                    start: datetime, billing_days: int, follow_up_days: int = 0,
                    assumptions: Assumptions = DEFAULT, progress: Progress | None = None) -> tuple[Outcome, Driver]:
    """One run: a fresh book of `customers`, billed for `billing_days`, followed for `follow_up_days` more."""
    book = build_book(customers, seed, assumptions)
    bill_until = start + timedelta(days=billing_days)
    account = SimulatedAccount(book, seed=seed, start=start, bill_until=bill_until, assumptions=assumptions,
                               smart_retries=config.file.stripe.retries == "stripe")
    driver = Driver(config, ledger, account, channels)
    driver.run(start, bill_until + timedelta(days=follow_up_days), progress)
    return driver.outcome(name, customers), driver


# -- dunctl demo --------------------------------------------------------------------------------------------------


def prepare_demo(directory: Path) -> Path:
    """Write the starter config, sequences and templates into `directory`, set up for the simulated account:
    dunctl does the retries (so they go through the account) and emails land in `outbox/` as files."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory} already exists and is not empty; the demo never overwrites",
                         "pass another directory: dunctl demo DIR, or remove this one")
    write_starter(directory, email_transport="file")
    config_path = directory / "dunctl.yaml"
    text = config_path.read_text()
    text, n = re.subn(r"(?m)^(\s*retries:\s*)stripe\b", r"\1dunctl", text, count=1)
    if n != 1:
        raise UsageError(f"cannot set stripe.retries in {config_path}: the starter config changed shape")
    text = text.replace("Example Billing <billing@example.com>", "Demo Billing <billing@dunctl-demo.test>")
    text = re.sub(r"(?m)^(\s*company:\s*)Example\b", r"\1Demo Co", text, count=1)
    text = "# Written by `dunctl demo`: the starter config, with dunctl doing the retries on a simulated account.\n" + text
    config_path.write_text(text)
    return config_path


def run_demo(directory: Path, *, customers: int = 500, days: int = 45, seed: int = DEFAULT_SEED,
             start: datetime = DEFAULT_START, progress: Progress | None = None) -> DemoResult:
    """Create `directory` with a config, sequences, templates, a ledger and an outbox, then run `days` of hourly
    ticks against a simulated account of `customers`. The same seed gives the same numbers."""
    if customers < 1 or days < 1:
        raise UsageError("--customers and --days must be at least 1")
    directory = Path(directory)
    config_path = prepare_demo(directory)
    config = load_config(config_path)
    ledger = _fast(Ledger.open(config.ledger_path))
    try:
        ledger.set_state("simulation", {"seed": seed, "customers": customers, "start": iso(start),
                                        "end": iso(start + timedelta(days=days))})
        outcome, driver = simulate_config(config, ledger, build_channels(config, {}), name="demo",
                                          customers=customers, seed=seed, start=start, billing_days=days,
                                          progress=progress)
        end = start + timedelta(days=days)
        ledger.set_state("simulation", {"seed": seed, "customers": customers, "start": iso(start), "end": iso(end),
                                        "last_tick": iso(driver.last_tick)})
        example = _example_case(ledger)
        headline = None
        try:
            from dunctl.report import headline as report_headline

            headline = report_headline(ledger, end)
        except ImportError:  # pragma: no cover - the report module ships with dunctl
            pass
    finally:
        ledger.close()
    outbox = (config.base_dir / (config.file.channels.email.dir if config.file.channels.email else "outbox"))
    return DemoResult(directory.resolve(), config_path.resolve(), config.ledger_path, outbox.resolve(), seed,
                      start, end, outcome, headline, example, driver.last_tick)


def _example_case(ledger: Ledger) -> str | None:
    """A case with a story: recovered after messages, else handed to a person, else any."""
    cases = ledger.cases(include_ended=True)
    for wanted in (lambda c: c["state"] == "recovered" and c["recovered_by"] == "customer",
                   lambda c: c["with_person"], lambda c: True):
        found = next((c for c in cases if wanted(c)), None)
        if found:
            return found["invoice_id"]
    return None


# -- dunctl simulate ----------------------------------------------------------------------------------------------


def variant_config(source: Path, work: Path) -> tuple[str, Config]:
    """A variant to simulate: a dunctl.yaml (its segments, sequences and templates as they are), or a directory
    of sequence files run under the starter config's segments and templates, with dunctl making the retries."""
    source = Path(source)
    if source.is_file():
        return source.stem if source.name != "dunctl.yaml" else source.parent.name or "config", load_config(source)
    if not source.is_dir():
        raise UsageError(f"{source} is neither a config file nor a directory of sequences",
                         "pass a dunctl.yaml or a directory holding sequence *.yaml files")
    target = work / f"variant-{source.name}"
    if target.exists():
        shutil.rmtree(target)
    write_starter(target)
    shutil.rmtree(target / "sequences")
    shutil.copytree(source, target / "sequences", ignore=shutil.ignore_patterns("templates"))
    text = (target / "dunctl.yaml").read_text()
    if (source / "templates").is_dir():     # the sequence set brings its own templates
        text = re.sub(r"(?m)^templates:.*$", f"templates: {{dir: {json.dumps(str((source / 'templates').resolve()))}}}",
                      text)
    # The sequences' own retry steps are what is being compared, so dunctl makes them (not Smart Retries).
    text = re.sub(r"(?m)^(\s*retries:\s*)stripe\b", r"\1dunctl", text, count=1)
    (target / "dunctl.yaml").write_text(text)
    return source.name, load_config(target / "dunctl.yaml")


def run_simulation(sources: list[Path], work: Path, *, customers: int = 1000, days: int = 30,
                   follow_up_days: int = 35, seed: int = DEFAULT_SEED, start: datetime = DEFAULT_START,
                   assumptions: Assumptions = DEFAULT,
                   progress: Callable[[str, int, int], None] | None = None) -> SimulationResult:
    """Run the same synthetic book under each config or sequence set. Billing runs for `days`; every case then
    gets `follow_up_days` more, so each sequence can play out. Nothing is sent anywhere."""
    if len(sources) < 1:
        raise UsageError("give at least one config file or sequences directory to simulate")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    result = SimulationResult(seed, customers, start, days, follow_up_days)
    names: set[str] = set()
    for i, source in enumerate(sources):
        name, config = variant_config(source, work)
        while name in names:
            name = f"{name}-{i + 1}"
        names.add(name)
        ledger_path = work / f"{i + 1:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.db"
        for stale in (ledger_path, Path(f"{ledger_path}-wal"), Path(f"{ledger_path}-shm")):
            stale.unlink(missing_ok=True)
        ledger = _fast(Ledger.open(ledger_path))
        try:
            step = (lambda done, total, now, name=name: progress(name, done, total)) if progress else None
            outcome, _ = simulate_config(config, ledger, RecordingChannels(config, {}), name=name,
                                         customers=customers, seed=seed, start=start, billing_days=days,
                                         follow_up_days=follow_up_days, assumptions=assumptions, progress=step)
        finally:
            ledger.close()
        result.outcomes.append(outcome)
    return result
