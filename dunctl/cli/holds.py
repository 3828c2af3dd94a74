"""`dunctl case promise` and `dunctl case dispute`: hold one invoice's automated messages for a promise to pay or
a disputed invoice (dunctl/receivables/holds.py); `dunctl case export`: its collections packet
(dunctl/receivables/packet.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from dunctl.cli.common import JsonOption, NowOption, handles_errors, load, now_from, open_ledger, out, print_json
from dunctl.errors import UsageError
from dunctl.receivables.journal import journal, to_csv, to_json

Until = Annotated[str, typer.Option("--until", help="The date (YYYY-MM-DD: by the end of that day, UTC) or time "
                                                    "the hold ends by itself.", show_default=False)]


def end_of(text: str):
    """'2026-12-20' is by the end of that day (UTC); a time is that time."""
    moment = now_from(text)
    return moment + timedelta(days=1) if len(text.strip()) == 10 else moment


def register(app: typer.Typer, changed) -> None:
    @app.command("export")
    @handles_errors
    def export(invoice: Annotated[str, typer.Argument(help="The Stripe invoice id (in_...).")],
               directory: Annotated[str | None, typer.Option(
                   "--to", "--dir", "-d", help="Where to write the packet; default: collections.dir of dunctl.yaml "
                   "(with the packets of the hand-offs), else the current directory.", show_default=False)] = None,
               now: NowOption = None, as_json: JsonOption = False) -> None:
        """Write the case's collections packet: INVOICE.json and INVOICE.html, its whole story.

        For example: dunctl case export in_1Abc --to packets/
        """
        from dunctl.receivables.packet import export as write   # lazy: see dunctl/lazy.py

        config = load()
        with open_ledger(config, must_exist=True) as ledger:
            paths = write(ledger, config, invoice, directory, now_from(now))
        if as_json:
            print_json({"invoice": invoice, "written": [str(p) for p in paths]})
        else:
            out.print("\n".join(f"wrote {p}" for p in paths), markup=False)

    @app.command("promise")
    @handles_errors
    def promise(invoice: Annotated[str, typer.Argument(help="The Stripe invoice id (in_...).")], until: Until,
                amount: Annotated[str | None, typer.Option(
                    "--amount", help="What the customer promised, in the invoice's currency (1500 or 1500.50); "
                    "default: all that is left.", show_default=False)] = None,
                now: NowOption = None, as_json: JsonOption = False) -> None:
        """The customer promised to pay by a date: this invoice's messages wait; unpaid then, a person is told.

        For example: dunctl case promise in_1Abc --until 2026-12-20 --amount 1500
        """
        from dunctl.receivables.holds import promise as record   # lazy: see dunctl/lazy.py

        with open_ledger(load(), must_exist=True) as ledger:
            changed(record(ledger, invoice, end_of(until), amount, now_from(now)), as_json)

    @app.command("dispute")
    @handles_errors
    def dispute(invoice: Annotated[str, typer.Argument(help="The Stripe invoice id (in_...).")],
                reason: Annotated[str, typer.Option("--reason", "-r", help="What the customer disputes.")],
                until: Annotated[str | None, typer.Option(
                    "--until", help="When the hold ends by itself (YYYY-MM-DD: the end of that day, UTC); default: "
                    "when a person resumes the case.", show_default=False)] = None,
                now: NowOption = None, as_json: JsonOption = False) -> None:
        """The customer disputes this invoice: its messages wait until --until, or until `case resume`.

        For example: dunctl case dispute in_1Abc --reason "wrong PO number" --until 2026-12-31
        """
        from dunctl.receivables.holds import dispute as record   # lazy: see dunctl/lazy.py

        with open_ledger(load(), must_exist=True) as ledger:
            changed(record(ledger, invoice, reason, end_of(until) if until else None, now_from(now)), as_json)


def write_journal(ledger, since, until, as_json: bool, output) -> None:
    """`report --journal`: the period's recoveries, partial payments and write-offs (both ends are required)."""
    if since is None or until is None:
        raise UsageError("--journal needs the period: --since and --until",
                         "for November: dunctl report --journal --since 2026-11-01 --until 2026-12-01")
    entries = journal(ledger, since, until)
    text = to_json(entries, since, until) if as_json else to_csv(entries)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
