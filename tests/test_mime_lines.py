"""Quoted-printable bodies are encoded line by line, each distinct line once per process (issue #25, per email
<= 0.5 ms): the same bytes as encoding the whole body, and the layout's lines, the same in every email, are not
encoded again for each message."""

from __future__ import annotations

import binascii
import sys
from datetime import datetime, timezone

import pytest

from dunctl.channels import EmailMessage
from dunctl.channels.mime import build_message

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)
LAYOUT = "".join(f'<tr><td style="padding:{n}px 20px;font-family:Helvetica,Arial,sans-serif">…</td></tr>\n'
                 for n in range(40))


@pytest.mark.parametrize("text", [
    "caf\u00e9 = cost\n", "trailing space \nand tab\t\n", ".\n.\nend .", "x" * 200 + "\n" + "é" * 90 + "\n",
    "a = b \t \n\n\n", "\x00 nul and \x7f del …\n", "no line end, trailing space ", "=\n=3D\n",
    "split at LF only: \u2028 \x0b \x0c \x1c \x85 \n", "CR\rCRLF\r\n"])
def test_a_body_is_what_encoding_it_whole_gives(text):
    text += "\n\u00e9"   # not ASCII: quoted-printable (short ASCII lines go as 7bit)
    built = build_message(EmailMessage("ada@example.com", "Hi", "plain", text), sender="billing@acme.test",
                          reply_to=None, key="k", now=NOW)
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    body += "" if body.endswith("\n") else "\n"
    assert b"quoted-printable\r\n\r\n" + binascii.b2a_qp(body.encode(), istext=True).replace(b"\n", b"\r\n") \
        in built.data

def test_the_layouts_lines_are_encoded_once_not_in_every_message():
    def encoded_while_building(n: int) -> int:
        sizes = []

        def watch(frame, event, arg):
            if event == "c_call" and arg is binascii.b2a_qp:
                sizes.append(len(frame.f_locals.get("line", b"")) or -1)

        html = f"<p>Hello customer {n},</p>\n" + LAYOUT
        sys.setprofile(watch)
        try:
            build_message(EmailMessage(f"c{n}@example.com", "Hi", "plain", html), sender="billing@acme.test",
                          reply_to=None, key=f"k{n}", now=NOW)
        finally:
            sys.setprofile(None)
        assert -1 not in sizes, "the whole body went to b2a_qp at once"
        return sum(sizes)

    encoded_while_building(1)
    assert encoded_while_building(2) < 40 < len(LAYOUT)   # only the greeting line is new
