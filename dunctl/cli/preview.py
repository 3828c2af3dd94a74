"""`dunctl preview`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from dunctl.cli.common import JsonOption, NowOption, handles_errors, ledger_now, load, now_from, print_json, state
from dunctl.errors import UsageError
from dunctl.preview import as_eml, as_text, read_only_ledger, render_preview
from dunctl.sanitize import terminal_lines, terminal_text


class Format(str, Enum):
    text = "text"
    html = "html"
    eml = "eml"


@handles_errors
def preview(
    template: Annotated[str, typer.Argument(help="The template's name (templates/NAME.subject.j2 ...).",
                                            show_default=False)],
    invoice: Annotated[str | None, typer.Option("--case", help="Render for this invoice's case in the ledger.",
                                                show_default=False)] = None,
    failure: Annotated[str | None, typer.Option("--failure", help="Render for a sample case of this failure "
                                                "type (default card_soft).", show_default=False)] = None,
    locale: Annotated[str | None, typer.Option("--locale", help="Render as for a customer with this locale.",
                                               show_default=False)] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="text: headers and text part; html: the HTML "
                                        "part; eml: the whole message as sent.")] = Format.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.",
                                                show_default=False)] = None,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Render a template exactly as it would be sent, for a real case or a sample one; sends and changes nothing.

    dunctl preview reminder --case in_1P2x3Y --format html -o reminder.html
    """
    if invoice and failure:
        raise UsageError("give --case or --failure, not both")
    config = load()
    if invoice:
        state.ledger_path = config.ledger_path
        with read_only_ledger(config.ledger_path) as ledger:
            result = render_preview(config, template, ledger=ledger, invoice_id=invoice, locale=locale,
                                    now=ledger_now(ledger, now))
    else:
        result = render_preview(config, template, failure_type=failure, locale=locale, now=now_from(now))
    if as_json:
        print_json(result.to_dict())
        return
    if fmt is Format.html and result.html is None:
        raise UsageError(f"template '{template}' has no HTML part ({template}.html.j2); it is sent as text only",
                         "use --format text")
    data = {Format.text: lambda: as_text(result).encode(), Format.html: lambda: result.html.encode(),
            Format.eml: lambda: as_eml(result, now_from(now))}[fmt]()
    for note in result.notes:
        typer.echo(f"note: {terminal_text(note)}", err=True)
    if output is None:   # a terminal shows customer data as text: its escape codes and controls are dropped
        typer.echo(terminal_lines(data.decode()), nl=False)
        return
    if not output.parent.is_dir():
        raise UsageError(f"cannot write {output}: the directory {output.parent} does not exist")
    output.write_bytes(data)
    typer.echo(f"wrote {output}", err=True)
