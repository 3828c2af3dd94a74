"""A module of dunctl over 500 lines says why on its first line (issue #22): past that size a module usually holds
two things that change for different reasons, and the next feature lands in it instead of beside it."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dunctl"
LIMIT = 500


def test_every_module_over_500_lines_gives_its_reason_on_its_first_line():
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        if len(lines) > LIMIT and not lines[0].startswith(f"# Over {LIMIT} lines: "):
            unexplained.append(f"{path.relative_to(PACKAGE.parent)}: {len(lines)} lines")
    assert not unexplained, "modules over 500 lines without '# Over 500 lines: <reason>' first:\n" + "\n".join(
        unexplained)
