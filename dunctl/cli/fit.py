"""Tables that fit the terminal without ever wrapping a value.

Rich, when a table is too wide, folds cells or trims every column evenly, which can split an amount, an invoice
id or a decline code across lines. Here each column says how important it is and whether it may be shortened
(names may end in an ellipsis; money, ids and codes may not). Text columns shrink first, then the least important
columns are dropped, and the table is built with fixed widths so Rich has nothing left to squeeze.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from collections.abc import Iterator

from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

COMFORTABLE = 14                  # a name cut to this still reads
GAP = 3                           # between two columns: padding on both sides and the (blank) divider


@dataclass
class Column:
    name: str
    priority: int = 0             # 0: always shown; higher numbers are dropped first
    shrink_to: int | None = None  # a text column may be cut (with an ellipsis) down to this width; None: never
    justify: str = "left"


@dataclass
class Fitted:
    """Which columns are shown (indices into the original columns), at which widths; which were left out."""

    kept: list[int]
    widths: dict[int, int]
    dropped: list[str] = field(default_factory=list)


def _width(cell: Text) -> int:
    return max((cell_len for cell_len in (Text(line).cell_len for line in cell.plain.split("\n"))), default=0)


def fit(columns: list[Column], rows: list[list[Text]], width: int, at_least: dict[int, int] | None = None) -> Fitted:
    natural = {i: max([Text(c.name).cell_len, *(_width(row[i]) for row in rows), (at_least or {}).get(i, 0)])
               for i, c in enumerate(columns)}
    kept = list(range(len(columns)))
    widths = dict(natural)

    def total() -> int:
        return sum(widths[i] for i in kept) + GAP * (len(kept) - 1)

    def shrink(floor_of) -> None:
        for i in sorted(kept, key=lambda i: -natural[i]):        # widest first
            if total() <= width:
                return
            floor = floor_of(columns[i])
            if floor is not None and widths[i] > floor:
                widths[i] = max(floor, widths[i] - (total() - width))

    dropped: list[str] = []

    def drop(at_least_priority: int) -> None:
        for i in sorted(kept, key=lambda i: (-columns[i].priority, -i)):
            if total() <= width or columns[i].priority < max(at_least_priority, 1):
                return
            kept.remove(i)
            dropped.append(columns[i].name)

    # Names keep a readable width before minor columns go; then they shrink to their floor before major ones go.
    shrink(lambda c: None if c.shrink_to is None else max(c.shrink_to, COMFORTABLE))
    drop(3)
    shrink(lambda c: c.shrink_to)
    drop(1)
    return Fitted(kept, {i: widths[i] for i in kept}, dropped)


def fitted_table(columns: list[Column], rows: list[list[Text]], fitted: Fitted, show_header: bool = True,
                 **options) -> Table:
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, padding=(0, 1), show_edge=False,
                  show_header=show_header, **options)
    for i in fitted.kept:
        c = columns[i]
        # Every width is at least the column's longest value, so only a shrinkable column is ever cut.
        table.add_column(Text(c.name, overflow="ellipsis", no_wrap=True), justify=c.justify, no_wrap=True,
                         width=fitted.widths[i], overflow="ellipsis")
    for row in rows:
        table.add_row(*(row[i] for i in fitted.kept))
    return table


# A currency code written apart from its number ("CHF 98,765.43", "1,234.567 KWD"): one atom, never split.
_CODE_THEN_NUMBER = re.compile(r"(?<![^ (])([A-Z]{3}) (?=[-\d])|(?<=\d) (?=[A-Z]{3}\b)")


def _glued(value: str) -> str:
    return _CODE_THEN_NUMBER.sub(lambda m: m.group(0).replace(" ", "\0"), value)


def value_lines(value: str, width: int) -> str:
    """`value` broken between words into lines of at most `width` (a word wider than that stands alone): a
    number, an amount with its currency code, a "(20 of 35)" part's words are never split inside."""
    if cell_len(value) <= width:
        return value
    atoms = _glued(value).split(" ")
    return "\n".join(line.replace("\0", " ") for line in packed_lines(atoms, width, " "))


def metric_table(rows: list[tuple[str, str]], width: int, headers: tuple[str, str] = ("Metric", "Value"),
                 **options) -> Table:
    """A two-column metric / value table for `width` columns: the metric's name whole where it can be (cut with
    an ellipsis only below COMFORTABLE), and a value too long for what is left continued on the next lines,
    broken between words (value_lines), never cut."""
    label = max((cell_len(name) for name, _ in rows), default=0)
    value = max((cell_len(v) for _, v in rows), default=0)
    label, value = max(label, cell_len(headers[0])), max(value, cell_len(headers[1]))
    longest_word = max((cell_len(w) for _, v in rows for w in _glued(v).split(" ")), default=0)
    if label + GAP + value > width:    # names keep up to half the line, the values wrap in the rest
        label = max(min(label, max(width // 2, width - GAP - value)), COMFORTABLE)
        value = max(width - GAP - label, longest_word, 1)
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, padding=(0, 1), show_edge=False,
                  **options)
    table.add_column(headers[0], no_wrap=True, width=label, overflow="ellipsis")
    table.add_column(headers[1], justify="right", no_wrap=True, width=value, overflow="ellipsis")
    for name, v in rows:
        table.add_row(Text(name), Text(value_lines(v, value)))
    return table


def dropped_note(fitted: Fitted, elsewhere: str) -> str | None:
    """A line saying which columns a narrow terminal hid, and where to see them."""
    if not fitted.dropped:
        return None
    return f"(hidden to fit the terminal: {', '.join(fitted.dropped)}; a wider terminal or {elsewhere} shows them)"


def packed_lines(atoms: list[str], width: int, separator: str = ", ") -> list[str]:
    """Join `atoms` (amounts, labels: never split) with `separator` into lines of at most `width` characters,
    breaking only between atoms."""
    lines, line = [], ""
    for atom in atoms:
        candidate = f"{line}{separator}{atom}" if line else atom
        if line and Text(candidate).cell_len > width:
            lines.append(line + separator.rstrip())
            line = atom
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines


def plain_rows(columns: list[Column], rows: list[list[Text]], fitted: Fitted) -> Iterator[str]:
    """The rows as plain text lines in the fitted widths, laid out like fitted_table's, without Rich's per-cell
    rendering (20x faster: what lets `status --all` stream 100k cases in seconds)."""
    kept = [(fitted.widths[i], columns[i].justify == "right", columns[i].shrink_to is not None)
            for i in fitted.kept]
    for row in rows:
        cells = [row[i].plain.split("\n") for i in fitted.kept]
        for n in range(max(len(lines) for lines in cells)):
            parts = []
            for (width, right, shrinks), lines in zip(kept, cells):
                text = lines[n] if n < len(lines) else ""
                size = cell_len(text)
                if size > width:
                    cut = Text(text)
                    cut.truncate(width, overflow="ellipsis")
                    text, size = cut.plain, cut.cell_len
                pad = " " * (width - size)
                parts.append(pad + text if right else text + pad)
            yield (" " * (GAP)).join(parts).rstrip()
