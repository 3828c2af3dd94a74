from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from dunctl import cases
from dunctl.errors import UsageError
from dunctl.explain import explain
from dunctl.cli.common import JsonOption, NowOption, handles_errors, ledger_now, load, now_from, open_ledger, out, \
    print_json
from dunctl.money import format_amount
from dunctl.receivables.closing import close as close_case
from dunctl.sanitize import terminal_text

app = typer.Typer(help="Look at one case, or take it over.", no_args_is_help=True, add_completion=False)

Invoice = Annotated[str, typer.Argument(help="The Stripe invoice id (in_...).")]
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why: kept on the case's timeline.")]


@app.command("show")
@handles_errors
def show(invoice: Invoice, now: NowOption = None, as_json: JsonOption = False) -> None:
    """Show one case's whole timeline: failures, attempts, messages, decisions, with reasons."""
    config = load()
    with open_ledger(config, must_exist=True) as ledger:
        detail = cases.show(ledger, invoice)
        if detail.case["state"] == "open":
            detail.waiting = [s for s in explain(ledger, config, invoice, ledger_now(ledger, now)).steps
                              if s.state == "waits"]
        if as_json:
            print_json(detail.to_dict())
            return
        c, inv = detail.case, detail.invoice
        who = (detail.customer or {}).get("name") or (detail.customer or {}).get("email") or c["customer_id"]
        # Customer text is data, never markup or terminal control: printed as plain Text, escape codes stripped.
        heading = Text(f"{c['invoice_id']}", style="bold")
        heading.append(f" · {terminal_text(who)} · {format_amount(inv['amount_remaining'], inv['currency'])} "
                       f"remaining of {format_amount(inv['amount_due'], inv['currency'])}")
        out.print(heading)
        out.print(Text(f"state {c['state']}{' (with a person)' if c['with_person'] else ''} · {c['failure_type']} "
                       f"({c['decline_code'] or 'no code'}) · segment {c['segment']} · sequence {c['sequence']} "
                       f"({c['sequence_hash']}) · {c['attempts']} attempt(s)"))
        if c["close_reason"]:
            out.print(Text(f"ended {cases.as_text_time(c['closed_at'])}: {terminal_text(c['close_reason'])}"))
        elif c["next_step"]:
            out.print(Text(f"next: {c['next_step']} at {cases.as_text_time(c['next_due_at'])}"))
        if c.get("held_because") and not c["close_reason"]:
            out.print(Text(f"waits: {terminal_text(c['held_because'])}"))
        for step in detail.waiting:   # why a due step waits: quiet hours, the network's retry advice, notice, caps
            out.print(Text(f"waits: {step.step}: {terminal_text(step.why)}"
                           + (f" (until {cases.as_text_time(step.when)})" if step.when else "")))
        table = Table("when (UTC)", "what", "detail", header_style="bold")
        for entry in detail.timeline:
            table.add_row(Text(cases.as_text_time(entry["at"]), no_wrap=True), Text(entry["kind"]),
                          Text(terminal_text(entry["summary"])))
        out.print(table)


def _changed(case: dict, as_json: bool) -> None:
    if as_json:
        print_json({k: v for k, v in case.items() if k != "sequence_def"})
    else:
        out.print(f"{case['invoice_id']}: {case['state']}", markup=False)


@app.command("pause")
@handles_errors
def pause(invoice: Invoice, reason: Reason, now: NowOption = None, as_json: JsonOption = False) -> None:
    """A person takes over: no automated step runs until resume."""
    with open_ledger(load(), must_exist=True) as ledger:
        _changed(cases.pause(ledger, invoice, reason, now_from(now)), as_json)


@app.command("resume")
@handles_errors
def resume(invoice: Invoice, reason: Reason, now: NowOption = None, as_json: JsonOption = False) -> None:
    """Hand a paused case back to its sequence."""
    config = load()
    with open_ledger(config, must_exist=True) as ledger:
        _changed(cases.resume(ledger, config, invoice, reason, now_from(now)), as_json)


@app.command("resolve")
@handles_errors
def resolve(
    invoice: Annotated[str | None, typer.Argument(help="The Stripe invoice id (in_...).", show_default=False)] = None,
    step: Annotated[str | None, typer.Argument(help="The step whose outcome is unknown (see `dunctl status`).",
                                               show_default=False)] = None,
    reason: Reason = "",
    sent: Annotated[bool, typer.Option("--sent", help="It went out (a Stripe step: it took effect): record it as done.")] = False,
    resend: Annotated[bool, typer.Option("--resend", help="It did not: run it once more on the next tick.")] = False,
    all_sent: Annotated[bool, typer.Option("--all-sent", help="Every unknown claimed before --before went out.")
                        ] = False,
    all_not_sent: Annotated[bool, typer.Option("--all-not-sent", help="None of those did: run each once more.")
                            ] = False,
    before: Annotated[str | None, typer.Option("--before", help="With --all-sent/--all-not-sent: only unknowns "
                                               "claimed before this UTC time (ISO 8601).", show_default=False)
                      ] = None,
    by: Annotated[str, typer.Option("--by", help="Who decided (default: your login name).")] = "",
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Settle an action whose outcome is unknown: dunctl case resolve in_1 notice --sent -r "in the SMTP log".

    In bulk: dunctl case resolve --all-sent --before 2026-11-02T15:00:00Z -r "all in the SMTP log"
    """
    if not reason.strip():
        raise UsageError("say why with --reason/-r: it is kept on each case's timeline",
                         'dunctl case resolve INVOICE STEP --sent -r "in the SMTP log"')
    if all_sent or all_not_sent:
        _resolve_all(all_sent, all_not_sent, invoice, before, reason, by, now, as_json)
        return
    if sent == resend or invoice is None or step is None:
        raise UsageError("say which step and either --sent or --resend (or, in bulk, --all-sent or --all-not-sent "
                         "with --before)", "dunctl case resolve INVOICE STEP --sent -r REASON")
    config = load()
    who = by or getpass.getuser()
    with open_ledger(config, must_exist=True) as ledger:
        _changed(cases.resolve(ledger, config, invoice, step, sent=sent, reason=reason, by=who, now=now_from(now)),
                 as_json)


def _resolve_all(all_sent: bool, all_not_sent: bool, invoice: str | None, before: str | None, reason: str, by: str,
                 now: str | None, as_json: bool) -> None:
    if all_sent == all_not_sent or invoice is not None or before is None:
        raise UsageError("in bulk, say one of --all-sent or --all-not-sent, with --before TIME and no INVOICE STEP",
                         'dunctl case resolve --all-sent --before 2026-11-02T15:00:00Z -r "all in the SMTP log"')
    config = load()
    moment = now_from(before)
    with open_ledger(config, must_exist=True) as ledger:
        done = cases.resolve_all(ledger, config, sent=all_sent, before=moment, reason=reason,
                                 by=by or getpass.getuser(), now=now_from(now))
    if as_json:
        print_json(done.to_dict())
        return
    for a in done.resolved:
        out.print(f"{a['invoice_id']} {a['step_id']} ({a['action']}, claimed {cases.as_text_time(a['claimed_at'])}): "
                  f"{'sent' if all_sent else 'runs once more on the next tick'}", markup=False)
    for a, why in done.left:
        out.print(f"{a['invoice_id']} {a['step_id']}: left unknown: {why}", markup=False)
    out.print(f"resolved {len(done.resolved)} action(s) with an unknown outcome claimed before "
              f"{moment:%Y-%m-%d %H:%M:%S}" + (f"; {len(done.left)} left" if done.left else ""), markup=False)


@app.command("close")
@handles_errors
def close(invoice: Invoice, reason: Reason,
          outcome: Annotated[str | None, typer.Option(
              "--as", help="How it ended: collected (the whole amount left came in), settled (--amount came in, "
                           "the rest is written off) or written-off; booked by `report --journal`.")] = None,
          amount: Annotated[str | None, typer.Option(
              "--amount", help="With --as settled: the amount agreed, in the invoice's currency (1500.50).")] = None,
          now: NowOption = None, as_json: JsonOption = False) -> None:
    """End a case by hand (settled offline, forgiven, sent to collections)."""
    with open_ledger(load(), must_exist=True) as ledger:
        _changed(close_case(ledger, invoice, reason, now_from(now), outcome, amount), as_json)


# Promises to pay and disputed invoices (net-terms receivables): their own module, registered here.
from dunctl.cli import holds as _holds  # noqa: E402

_holds.register(app, _changed)
