"""After a batch runs, a case's next due time is taken from its plan when every effect went as planned and nothing
in the plan waited, or when nothing at all was decided for the case or its customer (`run._went_as_planned`),
else worked out from the case as planned plus what the effects wrote
(case, actions, invoice, contacts read again; customer and subscription kept). Either way it must be exactly what
a full reload gives at the same moment: checked after every tick of a simulated month, on every open case the
tick acted on or planned, with both paths taken many times. (A case not touched keeps the schedule worked out when it was last touched: as time passes a fresh computation
may differ, e.g. a contact cap's week moves on; the stored one is then early, never late, and the tick it wakes
schedules again.)"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from dunctl.clock import iso
from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.scaffold import write_starter
from dunctl.simulation.account import SimulatedAccount
from dunctl.simulation.assumptions import preset_assumptions
from dunctl.simulation import demo
from dunctl.simulation.demo import DEFAULT_START, DemoChannels, Driver
from dunctl.simulation.population import build_book
from dunctl.tick import run
from dunctl.tick.context import planner_settings
from dunctl.tick.schedule import Sequences, load_bundle, next_due, plan_case, system_effects


class CheckingDriver(Driver):
    """Compares, after every tick, each open case's stored schedule with one computed from a full reload."""

    checked = 0
    differences: list = []
    due: list[int] = []                 # the cases due when the tick began (it planned and scheduled each)

    def _feed(self, result, now):
        if not result.actions and not self.due:     # nothing ran or was planned: nothing was scheduled
            super()._feed(result, now)
            return
        settings = planner_settings(self.config)
        retries = self.config.file.stripe.retries == "dunctl"
        sequences = Sequences(self.ledger)
        cases = [self.ledger.cases.for_invoice(a.invoice_id) for a in result.actions]
        acted = {case["id"] for case in cases if case is not None}   # pre-dunning notices have no case
        for case_id in sorted((acted | set(self.due)) & set(self.ledger.cases.open_ids())):
            bundle = load_bundle(self.ledger, case_id, settings, now)
            sequence = sequences(bundle)
            pending = system_effects(bundle, settings, retries, now, sequence.max_attempts)
            due, step = next_due(bundle, plan_case(bundle, sequence, settings, retries, now), settings, retries,
                                 now, pending)
            stored = self.ledger.cases.get(case_id)
            if (iso(due), step) != (stored["next_due_at"], stored["next_step"]):
                self.differences.append((iso(now), stored["invoice_id"], (iso(due), step),
                                         (stored["next_due_at"], stored["next_step"])))
            self.checked += 1
        super()._feed(result, now)


def test_the_schedule_after_a_batch_equals_a_full_reload_over_a_simulated_month(tmp_path, monkeypatch):
    paths = {"plan": 0, "read again": 0}
    decide = run._went_as_planned

    def counted(*args):
        decided = decide(*args)
        paths["plan" if decided is not None else "read again"] += 1
        return decided

    monkeypatch.setattr(run, "_went_as_planned", counted)
    tick = demo.run_tick

    def noting_due(ledger, config, gateway, channels, now, **options):
        CheckingDriver.due = ledger.due_case_ids(now)
        return tick(ledger, config, gateway, channels, now, **options)

    monkeypatch.setattr(demo, "run_tick", noting_due)
    write_starter(tmp_path)
    text = (tmp_path / "dunctl.yaml").read_text().replace("mode: monitor", "mode: live")
    (tmp_path / "dunctl.yaml").write_text(text)
    config = load_config(tmp_path / "dunctl.yaml")
    assert config.file.contact is not None and config.file.dunning.group_messages   # caps and grouping in play
    ledger = Ledger.open(config.ledger_path)
    # The smallest book with the work the asserts below need: 30 customers whose renewals fail three times in ten
    # (the median preset's 7% needed 300 customers for as many failures, at twice the CPU).
    assumptions = replace(preset_assumptions("median"), invoice_failure_rate=0.3)
    book = build_book(30, 3, assumptions)
    end = DEFAULT_START + timedelta(days=30)
    account = SimulatedAccount(book, seed=3, start=DEFAULT_START, bill_until=end, assumptions=assumptions,
                               smart_retries=False)
    driver = CheckingDriver(config, ledger, account, DemoChannels(config, {}))
    driver.run(DEFAULT_START, end)
    assert driver.messages > 25 and driver.checked > 50          # a month with real work in it
    assert driver.differences == []
    assert paths["plan"] > 50 and paths["read again"] > 10         # both ways of scheduling were compared
