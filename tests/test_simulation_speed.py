"""What keeps simulations cheap without changing what they compute."""

from __future__ import annotations

import dataclasses

from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.simulation.assumptions import preset_assumptions
from dunctl.simulation.demo import DEFAULT_START, DemoChannels, _fast, prepare_demo, simulate_config


FAILING = dataclasses.replace(preset_assumptions("median"), invoice_failure_rate=0.8)   # a small book that acts


def test_a_simulated_ledger_never_waits_for_the_disk(tmp_path):
    """A simulation is rebuilt by re-running: its ledger stays at synchronous=OFF through every tick. A tick's light
    commit used to turn the next ordinary one back to FULL, an fsync per commit for the rest of the run."""
    config = load_config(prepare_demo(tmp_path / "demo", None))
    ledger = _fast(Ledger.open(config.ledger_path))
    try:
        outcome, _ = simulate_config(config, ledger, DemoChannels(config, {}), name="demo", customers=20, seed=3,
                                     start=DEFAULT_START, billing_days=4, assumptions=FAILING)
        assert outcome.actions > 0                                   # ticks that acted: light commits happened
        assert ledger.conn.execute("PRAGMA synchronous").fetchone()[0] == 0
    finally:
        ledger.close()
