"""The Stripe SDK dunctl runs with pins the API version every request sends (stripe.api_version): a new major
release of stripe-python moves it, and dunctl's code and the fake are written for one version."""

import re
from pathlib import Path

import stripe

from dunctl.stripe.client import PINNED_API_VERSION
from tests.fakestripe import API_VERSION


def test_the_sdk_is_pinned_to_the_major_version_whose_api_version_dunctl_speaks():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()   # (tomllib is 3.11+)
    assert re.findall(r'^\s*"(stripe\b[^"]*)"', pyproject, re.M) == ["stripe>=16,<17"]   # no upgrade moves it
    assert stripe.VERSION.split(".")[0] == "16"
    assert PINNED_API_VERSION == stripe.api_version == API_VERSION == "2026-10-28.endive"
