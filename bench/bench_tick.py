"""What a tick costs: idle on a small and a large ledger, and per due email against doing the same by hand.

    python bench/bench_tick.py [--small 10000] [--large 1000000] [--due 10000] [--runs 3]
    python bench/bench_tick.py --instructions 400 [--against /tmp/old]   # per email, counted by valgrind

Prints each figure next to its reference from the same run, as a ratio:
- an idle tick (nothing due) on --large open cases vs on --small (goal: <= 2x; nothing may grow with the ledger);
- a tick that sends --due emails through the file transport, per email and in all, vs doing it by hand without
  dunctl (Babel for the amount, Jinja for a text and an HTML template, the standard library's email package for
  the message, written whole and renamed into an outbox: none of dunctl's code, no ledger, no exactly-once), and
  next to creating the same files alone (what the file system charges whoever writes them);
  each busy tick runs --runs times on a fresh ledger and the median is printed last.
"""

from __future__ import annotations

import argparse
import email.message
import email.policy
import email.utils
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import instructions  # noqa: E402
from bench.ledger_builder import SCRATCH, build, scratch  # noqa: E402
import jinja2  # noqa: E402
from babel.numbers import format_currency  # noqa: E402

from dunctl.config import load_config  # noqa: E402
from dunctl import collector  # noqa: E402
from dunctl.tick import build_channels, run_tick  # noqa: E402
from tests.helpers import T0  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def user() -> float:
    """User CPU alone: what dunctl's own code costs. The system part is mostly the file system's (creating the
    outbox files, writing the ledger's log), which on this shared machine moved from 0.04 to 0.66 ms a file
    within the same hour."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def idle(directory: Path, cases: int) -> tuple[float, int, int]:
    config_path, ledger = build(directory, cases)
    config = load_config(config_path)
    run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(hours=1), sync=False)
    statements, vm = [], [0]
    ledger.conn.set_trace_callback(statements.append)
    ledger.conn.set_progress_handler(lambda: vm.__setitem__(0, vm[0] + 1) or 0, 1)   # every VM instruction
    run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(hours=2), sync=False)
    ledger.conn.set_trace_callback(None)
    ledger.conn.set_progress_handler(None, 0)
    best = float("inf")
    for minute in range(1, 6):
        started = time.perf_counter()
        run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(hours=2, minutes=minute),
                 sync=False)
        best = min(best, time.perf_counter() - started)
    return best, len(statements), vm[0]


HAND_SUBJECT = "Your payment to {{ company }} did not go through"
HAND_TEXT = """Hi {{ name }},

We could not collect {{ amount }} for invoice {{ number }} ({{ reason }}). Nothing is lost: update your card and
we will try again.

Update your card: {{ link }}

Thanks,
{{ company }}
"""
HAND_HTML = """<!doctype html><html><body style="font-family: sans-serif">
<p>Hi {{ name }},</p>
<p>We could not collect <strong>{{ amount }}</strong> for invoice {{ number }} ({{ reason }}). Nothing is lost:
update your card and we will try again.</p>
<p><a href="{{ link }}" style="background: #635bff; color: #fff; padding: 10px 16px">Update your card</a></p>
<p>Thanks,<br>{{ company }}</p>
</body></html>"""


def by_hand_emails(outbox: Path, invoice: dict, count: int) -> None:
    """`count` payment-failed emails for `invoice`, done by hand with Jinja, Babel and the standard library."""
    env = jinja2.Environment(autoescape=True)
    subject_t, text_t, html_t = (env.from_string(t) for t in (HAND_SUBJECT, HAND_TEXT, HAND_HTML))
    outbox.mkdir()
    folder = os.open(outbox, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(count):
        values = {"name": f"Customer {i}", "company": "Example", "number": invoice["number"] or invoice["id"],
                  "amount": format_currency(invoice["amount_due"] / 100, invoice["currency"].upper(), locale="en_US"),
                  "reason": "your card was declined", "link": invoice["hosted_invoice_url"]}
        message = email.message.EmailMessage()
        message["From"] = "Example Billing <billing@example.com>"
        message["To"] = f"c{i}@example.com"
        message["Subject"] = subject_t.render(values)
        message["Date"] = email.utils.format_datetime(T0)
        message["Message-ID"] = email.utils.make_msgid(domain="example.com")
        message.set_content(text_t.render(values))
        message.add_alternative(html_t.render(values), subtype="html")
        data = message.as_bytes(policy=email.policy.SMTP)
        fd = os.open(f".tmp-{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=folder)
        os.write(fd, data)
        os.close(fd)
        os.replace(f".tmp-{i}", f"hand-{i}.eml", src_dir_fd=folder, dst_dir_fd=folder)
    os.close(folder)


def busy(directory: Path, due: int) -> tuple[float, float, float, int, float, float, float]:
    """One tick sending `due` emails: CPU per email, wall for all; and the same emails by hand (render + write
    through the same transport, no ledger), and the outbox's files alone (the same bytes, created and renamed as
    the transport does: what this file system charges, whoever writes)."""
    config_path, ledger = build(directory, due, due=due)
    config = load_config(config_path)
    os.sync()   # what earlier steps wrote (the large ledger: about a gigabyte) is on disk before the clock starts
    started, started_user, wall = cpu(), user(), time.perf_counter()
    result = run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(hours=1), sync=False)
    ticked, ticked_user, wall = cpu() - started, user() - started_user, time.perf_counter() - wall
    sent = sum(a.status == "done" and a.action == "email" for a in result.actions)
    # by hand: what a developer writes without dunctl, none of its code reused: the amount formatted by Babel, a
    # text and an HTML template rendered by Jinja, a multipart message built and serialised by the standard
    # library, and written whole then renamed into an outbox, as dunctl's file transport does
    invoice = dict(ledger.sync.invoice("in_0"))
    started, started_user = cpu(), user()
    by_hand_emails(directory / "by-hand", invoice, due)
    by_hand, by_hand_user = cpu() - started, user() - started_user
    # the files alone
    data = next((directory / "outbox").glob("*.eml")).read_bytes()
    files = directory / "files"
    files.mkdir()
    folder = os.open(files, os.O_RDONLY | os.O_DIRECTORY)
    started = cpu()
    for i in range(due):
        fd = os.open(f".tmp-{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, dir_fd=folder)
        os.write(fd, data)
        os.close(fd)
        os.replace(f".tmp-{i}", f"{i}.eml", src_dir_fd=folder, dst_dir_fd=folder)
    alone = cpu() - started
    os.close(folder)
    return ticked / max(sent, 1), by_hand / due, alone / due, sent, wall, ticked_user / max(sent, 1), by_hand_user / due


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="busy ticks, each on a fresh ledger (the median is "
                                                            "quoted: this machine's file system cost varies)")
    parser.add_argument("--instructions", type=int, metavar="N", help="instead: instructions per due email under "
                        "valgrind, a tick of N due emails minus one of N/4, divided by 3N/4 (the figure that does "
                        "not move with this machine's speed)")
    parser.add_argument("--against", type=Path, help="with --instructions: a copy of another commit's tree "
                        "(git archive REV | tar -x -C DIR), counted the same way for a before/after")
    args = parser.parse_args()
    if args.instructions:
        print_instructions(args.instructions, args.against)
        return
    collector.configure()     # the ticks below run with the collector as `dunctl tick` runs them (the CLI's first step)
    with scratch() as tmp:
        small = idle(Path(tmp) / "small", args.small)
        large = idle(Path(tmp) / "large", args.large)
        runs = [busy(Path(tmp) / f"busy-{n}", args.due) for n in range(args.runs)]
    cpu_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    print(f"machine: {cpu_name}, {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print(f"idle tick, {args.small:,} open cases: {small[0] * 1000:.1f} ms, {small[1]} SQL statements, "
          f"{small[2]:,} VM instructions")
    print(f"idle tick, {args.large:,} open cases: {large[0] * 1000:.1f} ms, {large[1]} SQL statements, "
          f"{large[2]:,} VM instructions")
    print(f"  ratio large/small: {large[0] / small[0]:.2f}x time, {large[2] / max(small[2], 1):.2f}x work "
          f"(goal <= 2x)")
    for n, (per_email, per_hand, per_file, sent, wall, email_user, hand_user) in enumerate(runs, 1):
        print(f"tick {n} sending {sent:,} due emails (file transport): {per_email * 1000:.2f} ms CPU per email "
              f"({email_user * 1000:.2f} ms user), {wall:.1f} s wall; by hand (Jinja + Babel + stdlib email, no ledger) "
              f"{per_hand * 1000:.2f} ms ({hand_user * 1000:.2f} ms user; {per_email / per_hand:.2f}x); the files "
              f"alone {per_file * 1000:.2f} ms")
    per_email, per_hand, per_file, sent, wall, email_user, hand_user = (statistics.median(r[i] for r in runs)
                                                                         for i in range(7))
    print(f"median of {len(runs)}: {per_email * 1000:.2f} ms CPU per email (goal <= 0.5 ms; {email_user * 1000:.2f} "
          f"ms user), {wall:.1f} s wall for {sent:,.0f} (goal for 10,000: <= 5 s); by hand {per_hand * 1000:.2f} ms "
          f"({hand_user * 1000:.2f} ms user; {per_email / per_hand:.2f}x), of which the file system "
          f"{per_file * 1000:.2f} ms")


def print_instructions(due: int, against: Path | None) -> None:
    """Instructions per due email: ticks of `due` and `due // 4` emails, each on a ledger built by its own tree's
    code (bench/tick_once.py) and counted by valgrind (bench/instructions.py); what both share (starting Python,
    importing, loading the config) cancels out. Each tick runs once uncounted first, warming the caches."""
    if not instructions.available():
        print("valgrind is not installed: no instruction count (apt-get install valgrind)")
        return
    counted = {}
    for name, tree in (("this tree", None), (str(against), against)):
        if name != "this tree" and tree is None:
            continue
        env = instructions.tree_env({k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, tree)
        env.setdefault("PYTHONPYCACHEPREFIX", str(SCRATCH / "pycache"))
        env.setdefault("DUNCTL_CACHE_DIR", str(SCRATCH / "cache"))
        runner = [sys.executable, str(Path(__file__).with_name("tick_once.py"))]
        sizes = {}
        for size in (due // 4, due):
            with scratch() as tmp:
                ticks = []
                for n in range(2):
                    built = subprocess.run([*runner, "build", str(Path(tmp) / f"{n}"), str(size)], env=env, cwd=tree,
                                           capture_output=True, text=True, check=True).stdout.split()[-1]
                    ticks.append([*runner, "tick", built])
                subprocess.run(ticks[0], env=env, cwd=tree, capture_output=True, check=True)
                sizes[size] = instructions.count(ticks[1], env=env, cwd=tree)
        counted[name] = (sizes[due] - sizes[due // 4]) / (due - due // 4)
        print(f"per due email ({name}): {counted[name] / 1e6:.2f} M instructions (a tick of {due:,} minus one of "
              f"{due // 4:,})")
    if len(counted) == 2:
        mine, theirs = counted.values()
        print(f"  ratio: {mine / theirs:.3f}x the instructions of {against}")


if __name__ == "__main__":
    main()
