"""Start-up: a command imports what it needs and nothing else, and `--help` lists every command truthfully."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from dunctl.cli.app import COMMANDS, load_command


def _modules_after(argv: list[str], cwd) -> set[str]:
    """Run the CLI in a fresh interpreter and return the top-level names of the modules it imported."""
    code = textwrap.dedent(f"""
        import json, sys
        from dunctl.cli.app import app
        try:
            app({argv!r}, standalone_mode=False)
        except SystemExit:
            pass
        sys.stderr.write(json.dumps(sorted(sys.modules)))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


HEAVY_FOR_HELP = {"stripe", "jinja2", "dunctl.report", "dunctl.report_render", "dunctl.simulation",
                  "dunctl.tick", "dunctl.config", "dunctl.ledger"}


def test_help_imports_no_command_module(tmp_path):
    loaded = _modules_after(["--help"], tmp_path)
    assert not HEAVY_FOR_HELP & loaded, HEAVY_FOR_HELP & loaded


def test_an_idle_tick_imports_neither_stripe_nor_the_report_nor_the_simulation(tmp_path):
    subprocess.run([sys.executable, "-m", "dunctl", "init", str(tmp_path)], check=True, capture_output=True)
    # the first tick creates the ledger and parses the templates once (kept by fingerprint): every later one idles
    first = ["tick", "--no-sync", "--now", "2026-11-25T11:55:00Z"]
    subprocess.run([sys.executable, "-m", "dunctl", *first], cwd=tmp_path, check=True, capture_output=True)
    loaded = _modules_after(["tick", "--no-sync", "--now", "2026-11-25T12:00:00Z"], tmp_path)
    assert "dunctl.tick" in loaded        # the tick did run
    for name in ("stripe", "dunctl.stripe", "dunctl.report", "dunctl.report_render", "dunctl.simulation",
                 "dunctl.cli.demo"):
        assert name not in loaded, name
    # nor what only due work needs: templates, formatting, the planner, sqlite-utils (only to migrate), Rich
    # (only to print: an idle tick prints nothing)
    for name in ("jinja2", "babel", "sqlite_utils", "rich", "dunctl.planner", "dunctl.tick.executor",
                 "dunctl.messages", "dunctl.ledger.records", "dunctl.model"):
        assert name not in loaded, name


def test_a_tick_with_due_work_loads_what_it_needs(tmp_path):
    """The other side of the lazy imports: a tick that sends an email gets its templates and formatting."""
    subprocess.run([sys.executable, "-m", "dunctl", "init", str(tmp_path)], check=True, capture_output=True)
    from dunctl.config import load_config
    from dunctl.ledger import Ledger
    from tests.helpers import customer, failed_invoice, seed

    config = load_config(tmp_path / "dunctl.yaml")
    ledger = Ledger.open(config.ledger_path)
    seed(ledger, failed_invoice("in_1", customer_id="cus_1"), customers=[customer("cus_1", email="a@example.com")])
    ledger.close()
    text = (tmp_path / "dunctl.yaml").read_text().replace("mode: monitor", "mode: live")
    (tmp_path / "dunctl.yaml").write_text(text)
    loaded = _modules_after(["tick", "--no-sync", "--now", "2026-11-03T15:00:00Z"], tmp_path)
    # Babel only when a value is not in the cache's answers yet (dunctl/formats.py): the tests' cache may have them
    assert {"jinja2", "dunctl.formats", "dunctl.planner", "dunctl.tick.executor"} <= loaded
    assert list((tmp_path / "outbox").glob("*.eml"))          # and the email went out
    # through the file transport (init's): no SMTP client, no TLS (9 ms of a demo; dunctl/channels/outbox.py)
    assert not {"smtplib", "ssl", "http.client"} & loaded, {"smtplib", "ssl", "http.client"} & loaded


def test_the_ledger_schema_list_names_every_migration_in_order():
    """Ledger.open migrates only when the applied names differ from SCHEMA: one left out would never run."""
    from dunctl.ledger import SCHEMA
    from dunctl.ledger.migrations import migrations

    assert tuple(m.name for m in migrations._migrations) == SCHEMA


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_loads_and_help_shows_its_own_summary(name):
    command = load_command(name)      # a broken import fails here, loudly, instead of hiding the command
    first_line = (command.help or "").strip().splitlines()[0]
    assert first_line == COMMANDS[name][2]


def test_main_help_lists_every_command_in_order(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dunctl", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 0
    listed = [line.split()[1] for line in done.stdout.splitlines()
              if line.startswith("│ ") and len(line.split()) > 2 and line.split()[1] in COMMANDS]
    assert listed == list(COMMANDS)


def test_an_idle_tick_does_not_scan_installed_packages_for_pydantic_plugins(tmp_path):
    # Issue #25 cause 4: pydantic looks for plugins in every installed distribution's entry points the first time
    # it builds a validator (20-30 ms of an idle tick's CPU); dunctl uses none.
    subprocess.run([sys.executable, "-m", "dunctl", "init", str(tmp_path)], check=True, capture_output=True)
    code = textwrap.dedent("""
        import os, sys
        os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)
        from dunctl.cli.app import app
        try:
            app(["tick", "--no-sync", "--now", "2026-11-25T12:00:00Z"], standalone_mode=False)
        except SystemExit:
            pass
        from pydantic.plugin import _loader
        assert "dunctl.config" in sys.modules
        print("scanned" if _loader._plugins is not None else "not scanned")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=env)
    assert done.stdout.strip() == "not scanned", done.stderr


def test_a_dunctl_process_runs_the_cyclic_collector_every_10000_allocations(tmp_path):
    # dunctl/collector.py: with Python's 700 a demo ran 165 collector passes (4% of its CPU). The tick benchmarks
    # call the same configure(), so they time a tick as the CLI runs it.
    code = textwrap.dedent("""
        import gc, sys
        sys.argv = ["dunctl", "--version"]
        from dunctl.cli.app import main
        try:
            main()
        except SystemExit:
            pass
        sys.stderr.write(repr(gc.get_threshold()))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stderr.strip().splitlines()[-1] == "(10000, 10, 10)", done.stderr
