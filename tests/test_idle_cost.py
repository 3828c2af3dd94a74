"""An idle tick's work does not grow with the ledger: counted in SQLite VM instructions, not timed."""

from datetime import timedelta

from bench.ledger_builder import build
from dunctl.config import load_config
from dunctl.tick import build_channels, run_tick
from tests.helpers import T0


def idle_tick_work(directory, cases: int) -> int:
    config_path, ledger = build(directory, cases)
    config = load_config(config_path)
    run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(hours=1), sync=False)  # warm up
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    ledger.conn.set_progress_handler(count, 1)   # one call per VM instruction
    result = run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(hours=2), sync=False)
    ledger.conn.set_progress_handler(None, 0)
    assert not result.did_something
    return steps[0]


def test_an_idle_tick_costs_the_same_on_a_ledger_fifty_times_larger(tmp_path):
    small = idle_tick_work(tmp_path / "small", 400)
    large = idle_tick_work(tmp_path / "large", 20_000)   # with 60,000 finished actions
    assert small > 0                                      # counted: the idle tick did query the ledger
    assert large <= small * 1.2 + 10, (small, large)
