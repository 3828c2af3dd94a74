"""What a person meets first: help that reads well, options where they type them, a demo whose commands work
as printed, and a log file for teams that ship logs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dunctl.activity_log import append_tick, secret_values
from dunctl.config import load_config
from dunctl.tick import ActionReport, TickResult, build_channels, run_tick
from tests.helpers import T0, at, cli, failed_invoice, open_engine_ledger, runner, seed, starter

COMMANDS = [["init"], ["check"], ["sync"], ["tick"], ["status"], ["report"], ["demo"], ["simulate"], ["backup"],
            ["preview"], ["explain"], ["case"], ["case", "show"], ["case", "pause"], ["case", "resume"],
            ["case", "resolve"], ["case", "close"]]


def help_of(*command: str) -> str:
    from dunctl.cli.app import app

    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_help_has_an_example_and_no_bool_metavars(command):
    text = help_of(*command)
    assert "<bool>" not in text
    assert re.search(r"dunctl [a-z]", text), f"no example in `dunctl {' '.join(command)} --help`"


def test_the_main_help_lists_exit_codes_and_completion():
    text = help_of()
    assert "Exit codes: 0 ok; 1 " in text and "2 usage" in text and "3 another tick" in text
    assert "--install-completion" in text and "<bool>" not in text


def test_config_is_accepted_after_the_command(tmp_path):
    config = starter(tmp_path / "elsewhere")
    from dunctl.cli.app import app

    # the width every CLI test uses (tests/helpers.py): Rich fixes a console's width when it is first built
    wide = {"COLUMNS": "160"}
    after = runner.invoke(app, ["status", "-c", str(config), "--json"], env=wide)
    assert after.exit_code == 0, after.output
    assert json.loads(after.stdout)["cases"] == []
    long_form = runner.invoke(app, ["check", "--config", str(config)], env={**wide, "STRIPE_API_KEY": "sk_test_1"})
    assert long_form.exit_code == 0, long_form.output
    nested = runner.invoke(app, ["case", "show", "in_nope", "-c", str(config)], env=wide)
    assert nested.exit_code == 2 and "in_nope" in nested.stderr  # it read that config's ledger
    # the default (./dunctl.yaml) is not silently used instead
    assert runner.invoke(app, ["status"], env=wide).exit_code == 2


def test_shell_completion_can_be_installed(monkeypatch):
    from dunctl.cli.app import app

    # Without this Typer guesses the shell from the parent processes (shellingham), which under CI or an agent's
    # runner may be `sh` or none ("Shell sh not supported"); with it, the shell is the one named.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    shown = runner.invoke(app, ["--show-completion", "bash"], env={"SHELL": "/bin/bash", "COLUMNS": "160"})
    assert shown.exit_code == 0, (shown.output, repr(shown.exception))
    assert "complete" in shown.stdout and "dunctl" in shown.stdout


# -- the demo --------------------------------------------------------------------------------------------------


def test_the_demo_prints_commands_that_work_as_printed_and_nothing_on_stderr(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS",)}
    env["PATH"] = "/usr/bin:/bin"  # dunctl is not on PATH: as in a venv that is not activated
    script = Path(sys.executable).parent / "dunctl"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "dunctl"]
    demo = subprocess.run([*command, "demo", str(tmp_path / "demo"), "--customers", "120", "--days", "8", "--follow-up", "0"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert demo.stderr == ""
    printed = [line.strip() for line in demo.stdout.split("Look further")[1].splitlines()[1:] if line.strip()]
    runs = [line.split("    #")[0] for line in printed if not line.startswith("ls ")]
    assert len(runs) >= 4 and any("simulate --from-ledger" in line for line in runs)
    for line in runs:
        assert not line.startswith("dunctl "), "dunctl is not on PATH: the printed command would not run"
        result = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=120, env=env,
                                cwd=tmp_path)
        assert result.returncode == 0, (line, result.stderr)
        assert result.stdout


def test_simulate_writes_nothing_on_stderr(tmp_path):
    config = starter(tmp_path)
    result = subprocess.run([sys.executable, "-m", "dunctl", "simulate", str(config), "--customers", "10",
                             "--days", "5", "--follow-up", "5"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout


# -- the activity log ------------------------------------------------------------------------------------------


def test_a_tick_logs_one_json_line_per_action_and_per_tick(tmp_path):
    config_path = starter(tmp_path)
    ledger = open_engine_ledger(config_path)
    seed(ledger, failed_invoice("in_1"), failed_invoice("in_2", customer_id="cus_2"))
    config = load_config(config_path)
    result = run_tick(ledger, config, None, build_channels(config, {}), at("31m"), sync=False)
    log = tmp_path / "logs" / "dunctl.jsonl"
    append_tick(log, result)
    append_tick(log, run_tick(ledger, config, None, build_channels(config, {}), at("32m"), sync=False))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    actions = [line for line in lines if line["event"] == "action"]
    ticks = [line for line in lines if line["event"] == "tick"]
    assert len(ticks) == 2 and ticks[0]["opened"] == 2 and ticks[0]["done"] == 2 and ticks[1]["actions"] == 0
    assert {(a["invoice_id"], a["step"], a["action"], a["status"]) for a in actions} == {
        ("in_1", "notice", "email", "done"), ("in_2", "notice", "email", "done")}
    assert all("cus_" in a["detail"] and a["at"] == "2026-11-02T14:31:00Z" for a in actions)
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_tick_with_log_file_appends_lines_and_never_the_key(tmp_path):
    config = starter(tmp_path, **{"log.path": "ignored.jsonl"})
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    ledger.close()
    key = "sk_live_" + "k3y" * 8
    log = tmp_path / "logs" / "dunctl.jsonl"
    result = cli(config, "--log-file", str(log), "tick", "--no-sync", "--now", at("31m").isoformat(),
                 env={"STRIPE_API_KEY": key})
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["action", "tick"]
    assert lines[0]["to"] == "cus_1@example.com" and lines[0]["status"] == "done"
    assert key not in log.read_text() and not (tmp_path / "ignored.jsonl").exists()


def test_the_log_never_holds_a_secret_from_the_environment(tmp_path):
    config = load_config(starter(tmp_path, **{"channels.slack": {"webhook_url_env": "SLACK_WEBHOOK_URL"}}))
    key = "sk_live_" + "x9" * 12
    slack = "https://hooks.slack.com/services/T000/B000/s3cr3tt0k3n"
    environ = {"STRIPE_API_KEY": key, "SLACK_WEBHOOK_URL": slack}
    result = TickResult(now=T0, opened=["in_1"], actions=[
        ActionReport("in_1", "escalate", "escalate", "failed", f"posting to {slack} failed"),
        ActionReport("in_1", "retry-1", "retry", "failed", "Stripe said: Invalid API Key provided: sk_live_abc123")],
        errors=[f"sync failed with key {key}"])
    log = tmp_path / "dunctl.jsonl"
    append_tick(log, result, secret_values(config, environ))
    text = log.read_text()
    assert key not in text and slack not in text and "s3cr3tt0k3n" not in text and "sk_live_abc123" not in text
    assert text.count("***") == 3 and len(text.splitlines()) == 3


def test_check_names_an_unwritable_log_file_and_log_file_overrides_the_config(tmp_path):
    config = starter(tmp_path, **{"log.path": "blocker/dunctl.jsonl"})
    (tmp_path / "blocker").write_text("not a directory")
    env = {"STRIPE_API_KEY": "sk_test_1"}
    result = cli(config, "check", env=env)
    assert result.exit_code == 2 and "the log's directory" in result.stderr and "blocker" in result.stderr
    overridden = cli(config, "--log-file", str(tmp_path / "logs" / "x.jsonl"), "check", env=env)
    assert overridden.exit_code == 0, overridden.output
