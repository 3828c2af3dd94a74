"""One step of bench_tick.py's instruction count, run as its own process (with PYTHONPATH naming the tree under
test, so each side of a before/after builds and ticks with its own code and schema):

    python bench/tick_once.py build DIR N    # a ledger with N open cases, all due (bench/ledger_builder.py)
    python bench/tick_once.py tick CONFIG    # one tick of that ledger, no sync: what bench_tick.py times
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path


def main() -> None:
    from bench.ledger_builder import build
    from dunctl.config import load_config
    from dunctl.tick import build_channels, run_tick
    from tests.helpers import T0

    configure_collector()     # the collector as `dunctl tick` runs it (the CLI's first step)

    if sys.argv[1] == "build":
        config_path, ledger = build(Path(sys.argv[2]), int(sys.argv[3]), due=int(sys.argv[3]))
        ledger.close()
        print(config_path)
        return
    config = load_config(Path(sys.argv[2]))
    from dunctl.ledger import Ledger

    ledger = Ledger.open(config.ledger_path)
    result = run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(hours=1), sync=False)
    print(sum(a.status == "done" and a.action == "email" for a in result.actions))


def configure_collector() -> None:
    try:
        from dunctl.collector import configure
    except ImportError:   # a tree from before it (--against): its CLI set the same thresholds in main()
        import gc
        gc.set_threshold(10_000, 10, 10)
    else:
        configure()


if __name__ == "__main__":
    main()
