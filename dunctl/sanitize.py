"""Customer-provided text is data, never markup or control: the few functions every edge needs.

A customer's name, email or metadata value can hold anything Stripe accepts: CR/LF, terminal escape codes,
Slack's `<!channel>`, bidirectional overrides. Each edge passes such text through one of these before it is put
in a header, on a terminal or in a chat message, and the message still goes out.

    one_line(text)         one line for an email header or a log: controls and line breaks become one space
    terminal_text(text)    safe to print: escape sequences and control characters removed (newlines kept
                           when multiline=True); Rich markup is the CLI's job (rich.markup.escape) on top
    terminal_lines(text)   a whole document (preview, .eml) safe to print, its line endings kept as they are
    slack_text(text)       Slack mrkdwn-safe: & < > escaped, so <!channel> and <http://x|y> stay literal
"""

from __future__ import annotations

import re

# ESC-introduced sequences: CSI (ESC [ ... final, or its 8-bit form U+009B), OSC/DCS/APC/PM strings (ESC ] ...
# ended by BEL or ESC \\; unterminated: to the end of the text), and other two-character escapes. Lone C1 controls
# are removed with the other controls below.
_ESCAPES = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
                      r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"
                      r"|\x1b[ -~]?")
# C0 and C1 controls, DEL, line and paragraph separators, and the invisible format characters that reorder or
# hide text (bidi embeddings/overrides/isolates, zero-width joiners/spaces, BOM).
_CONTROLS = "\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
_CONTROL = re.compile(f"[{_CONTROLS}]")
_SPACES = re.compile(r" {2,}")   # no-break spaces stay: Babel puts them in amounts ("1 234,56 €")


def _control_but_lines(text: str) -> str:
    """Controls removed except newline and tab; CR and CRLF become newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(lambda m: m.group() if m.group() in "\n\t" else "", text)


def one_line(text: object, limit: int | None = None) -> str:
    """`text` as one line: every control character, line break and run of whitespace becomes one space, and the
    ends are trimmed. With `limit`, at most that many characters (an ellipsis marks the cut)."""
    value = str(text) if text is not None else ""
    if value.isascii() and value.isprintable():  # the common case, about 10x faster than the regexes
        line = value.strip()
        if "  " in line:
            line = _SPACES.sub(" ", line)
    else:
        line = _SPACES.sub(" ", _CONTROL.sub(" ", _ESCAPES.sub(" ", value))).strip()
    if limit is not None and len(line) > limit:
        line = line[:max(limit - 1, 0)] + "…"
    return line


def terminal_text(text: object, multiline: bool = False) -> str:
    """`text` safe to write to a terminal: no escape sequences (colours, cursor moves, hyperlinks, title changes)
    and no control characters. One line unless `multiline`, which keeps newlines and tabs."""
    value = str(text) if text is not None else ""
    if value.isascii() and value.isprintable():
        return value
    value = _ESCAPES.sub("", value)
    return _control_but_lines(value) if multiline else one_line(value)


def terminal_lines(text: str) -> str:
    """A whole document (a preview, an .eml) safe to write to a terminal: escape sequences and controls removed,
    its line endings (CRLF included) and tabs kept as they are."""
    if "\x1b" not in text and "\x9b" not in text and text.isprintable():
        return text
    return _CONTROL.sub(lambda m: m.group() if m.group() in "\r\n\t" else "", _ESCAPES.sub("", text))


def slack_text(text: object) -> str:
    """`text` for a Slack message: controls removed (newlines kept) and the three characters Slack treats as
    markup escaped, so `<!channel>`, `<@U123>` and `<http://x|click>` appear literally and notify no one."""
    value = _control_but_lines(_ESCAPES.sub("", str(text) if text is not None else ""))
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_blocks(value):
    """Block Kit `blocks` with every "text" string passed through slack_text (a copy; the input is unchanged)."""
    if isinstance(value, list):
        return [slack_blocks(item) for item in value]
    if isinstance(value, dict):
        return {key: slack_text(item) if key == "text" and isinstance(item, str) else slack_blocks(item)
                for key, item in value.items()}
    return value
