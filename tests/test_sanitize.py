"""The shared edge functions: customer text stays data in headers, on terminals and in Slack."""

import pytest

from dunctl.sanitize import one_line, slack_blocks, slack_text, terminal_text


@pytest.mark.parametrize("text, expected", [
    ("Jo Doe", "Jo Doe"),
    ("  Jo   Doe \t", "Jo Doe"),
    ("Jo\r\nBcc: evil@attacker.test", "Jo Bcc: evil@attacker.test"),
    ("Jo\x00\x07\x7f\x85Doe", "Jo Doe"),
    ("Jo\u2028Doe\u2029", "Jo Doe"),
    ("\x1b[31mred\x1b[0m name", "red name"),
    ("Jörg \u202eevil\u202c Ødegård", "Jörg evil Ødegård"),
    (None, ""),
    (4900, "4900"),
])
def test_one_line(text, expected):
    assert one_line(text) == expected


def test_one_line_limit_marks_the_cut():
    assert one_line("abcdefghij", limit=5) == "abcd…"
    assert one_line("abc", limit=5) == "abc"


@pytest.mark.parametrize("text, expected", [
    ("[/bold] x", "[/bold] x"),                                     # Rich markup is the CLI's to escape
    ("a\x1b]8;;http://evil.test\x07click\x1b]8;;\x07 b", "aclick b"),  # OSC 8 hyperlink removed
    ("\x1b]0;new title\x1b\\name", "name"),                          # window title change removed
    ("\x1b[2J\x1b[Hcleared", "cleared"),
    ("bell\x07 and \x9b31mC1 CSI", "bell and C1 CSI"),
    ("line1\nline2", "line1 line2"),
])
def test_terminal_text(text, expected):
    assert terminal_text(text) == expected


def test_terminal_text_multiline_keeps_lines_and_drops_the_rest():
    assert terminal_text("a\r\nb\tc\x1b[1m\x00d", multiline=True) == "a\nb\tcd"


def test_slack_text_escapes_markup_and_keeps_lines():
    assert slack_text("<!channel> & <http://x|y>\r\nok\x00") == "&lt;!channel&gt; &amp; &lt;http://x|y&gt;\nok"
    assert slack_text("*bold* _it_ https://pay.example.com/x?a=1&b=2") == \
        "*bold* _it_ https://pay.example.com/x?a=1&amp;b=2"          # Slack unescapes &amp; in the link


def test_slack_blocks_escapes_every_text_and_leaves_the_input_alone():
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "<!here>"},
               "fields": [{"type": "plain_text", "text": "a<b"}]}]
    assert slack_blocks(blocks) == [{"type": "section", "text": {"type": "mrkdwn", "text": "&lt;!here&gt;"},
                                     "fields": [{"type": "plain_text", "text": "a&lt;b"}]}]
    assert blocks[0]["text"]["text"] == "<!here>"
