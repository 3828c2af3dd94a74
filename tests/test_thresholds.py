"""Per-currency amount thresholds mean one amount: the shipped ones agree, and `check` warns when they do not."""

import yaml

from tests.helpers import cli, starter


def test_the_shipped_thresholds_are_the_same_amount_and_check_says_nothing(tmp_path):
    config = starter(tmp_path)
    result = cli(config, "check")
    assert "10x" not in result.output
    gte = yaml.safe_load(config.read_text())["segments"][0]["when"]["amount_due"]["gte"]
    assert gte["jpy"] == 7_500_000          # ¥7.5M, about $50,000: yen has no minor unit


def test_check_warns_when_thresholds_differ_more_than_tenfold_after_rough_conversion(tmp_path):
    config = starter(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["segments"][0]["when"]["amount_due"]["gte"]["jpy"] = 750_000_000
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    result = cli(config, "check")
    assert "segments[0] (human-review) amount_due.gte: the thresholds differ by more than 10x" in result.output
    assert "jpy: 750000000" in result.output and "rough rates" in result.output
