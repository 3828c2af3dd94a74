"""The HTML report in a real browser (headless Chromium from Debian's packages): at a desktop width (1280 px) and
a phone width (390 px) no table overflows its container, the page never scrolls sideways, and chart text is at
least 12 px. `.ci/run` installs Chromium when it is missing; in CI (CI set) a missing browser fails the test.

Chromium's headless window cannot be narrower than 500 px, so each width is an iframe of exactly that width in
a 1280 px page; a script in the report copy measures the layout and posts the figures to the page, which
`--dump-dom` prints."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone

import pytest

from dunctl.notices.report import PreDunning
from dunctl.report import build_report
from dunctl.report_render import to_html
from tests.helpers import unavailable
from tests.test_report_rollups import random_ledger

NOW = datetime(2026, 12, 31, tzinfo=timezone.utc)

MEASURE = """<script>
(() => {
  const tables = [...document.querySelectorAll('table')].map(t => {
    const wrap = t.parentElement;
    return {table: t.dataset.table || 'control', width: t.getBoundingClientRect().width,
            room: wrap.clientWidth, scroll: wrap.scrollWidth};
  });
  const text = [...document.querySelectorAll('.tick, .mark, .bar-label, .bar-value')]
    .map(e => parseFloat(getComputedStyle(e).fontSize));
  parent.postMessage(JSON.stringify({viewport: window.innerWidth, page: document.documentElement.scrollWidth,
                                     tables, chart_text: text}), '*');
})();
</script>"""

FRAME = """<!doctype html><html><body><pre id="measurements"></pre>
<script>addEventListener('message', e => {{ document.getElementById('measurements').textContent = e.data; }});</script>
<iframe src="{page}" style="width: {width}px; height: 3000px; border: 0"></iframe></body></html>"""


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        unavailable("chromium is not installed (apt-get install chromium); .ci/run installs it")
    return found


def measure(tmp_path, html: str, width: int) -> dict:
    page = tmp_path / f"page-{width}.html"
    page.write_text(html.replace("</body>", MEASURE + "\n</body>"), encoding="utf-8")
    frame = tmp_path / f"frame-{width}.html"
    frame.write_text(FRAME.format(page=page.name, width=width), encoding="utf-8")
    done = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1000",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
         frame.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="measurements">(.*?)</pre>', done.stdout, re.S)
    assert found and found.group(1), f"no measurements from chromium: {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    ledger = random_ledger(tmp_path_factory.mktemp("ledger") / "ledger.db", 7, cases=250)
    report = build_report(ledger, NOW)
    # The pre-dunning section with a big account's figures (the widest cells it can have).
    report.predunning = PreDunning(sent_by_kind={"card_expiring": 12_190, "upcoming_renewal": 3_136,
                                                 "usage_alert": 196_300, "large_charge": 2_025},
                                   expiry_notices=10_109, cards_updated_before_expiry=3_737, renewals_reminded=2_108,
                                   renewals_reminded_paid_first_attempt=1_998, renewals_not_reminded=162_018,
                                   renewals_not_reminded_paid_first_attempt=141_653, usage_alerts=196_300,
                                   large_charge_heads_ups=2_025, large_charge_invoices_failed=505)
    return to_html(report)


@pytest.mark.parametrize("width", [1280, 390])
def test_no_table_overflows_and_chart_text_is_readable(tmp_path, report_html, width):
    m = measure(tmp_path, report_html, width)
    assert m["viewport"] == width
    assert len(m["tables"]) >= 9 and "predunning" in [t["table"] for t in m["tables"]]
    overflowing = [t for t in m["tables"] if t["scroll"] > t["room"] or t["width"] > t["room"] + 0.5]
    assert overflowing == []
    assert m["page"] <= width                       # no sideways scrolling of the page
    assert m["chart_text"] and min(m["chart_text"]) >= 12


def test_the_measurement_catches_a_table_that_overflows(tmp_path):
    """The check above can fail: a table too wide for a phone is reported."""
    control = ("<!doctype html><html><head><meta name='viewport' content='width=device-width'></head><body>"
               "<div style='overflow-x: auto'><table><tr>" + "<td style='white-space: nowrap'>$1,234,567.89</td>" * 12
               + "</tr></table></div></body></html>")
    m = measure(tmp_path, control, 390)
    assert m["tables"][0]["scroll"] > m["tables"][0]["room"]


def test_the_curve_is_on_a_0_to_100_percent_axis_with_day_14_and_30_marked(report_html):
    for tick in ("0%", "25%", "50%", "75%", "100%"):
        assert f">{tick}</span>" in report_html
    assert re.search(r">day 14: \d+\.\d%</span>", report_html) and re.search(r">day 30: \d+\.\d%</span>", report_html)
    assert report_html.count('class="grid"') == 4   # gridlines at 25, 50, 75 and 100%
