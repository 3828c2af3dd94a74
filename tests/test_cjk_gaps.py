"""The gap between two CJK characters is found in a message's UTF-8 (dunctl/messages/templates.py `_CJK`): its
bytes match exactly the characters the ranges name, every one of them and no other."""

from __future__ import annotations

import re

from dunctl.messages.templates import _CJK, _CJK_GAP, _CJK_INLINE_GAP, _close_gaps

RANGES = ((0x3000, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xFF00, 0xFFEF))


def test_the_utf8_pattern_matches_exactly_the_cjk_ranges():
    one = re.compile(_CJK)
    for code in [*range(0xD800), *range(0xE000, 0x10000), 0x10000, 0x1F600, 0x10FFFF]:
        expected = any(lo <= code <= hi for lo, hi in RANGES)
        assert bool(one.fullmatch(chr(code).encode("utf-8"))) == expected, hex(code)


def test_gaps_close_between_cjk_characters_only():
    text = "お支払い\n  が完了しました。 ご確認\tください。 Thank you. 한 국 \udcff 日本"
    assert _close_gaps(_CJK_GAP, text) == "お支払いが完了しました。ご確認ください。 Thank you. 한 국 \udcff 日本"
    assert _close_gaps(_CJK_INLINE_GAP, text) == "お支払い\n  が完了しました。ご確認ください。 Thank you. 한 국 \udcff 日本"
