"""Issue 21, defect 7: every link in a message works when the customer clicks it, which may be days after it was
sent. A customer portal session URL expires within hours, so no config may email one: `dunctl check` refuses it
(exit 2), naming the key and what to set instead."""

from __future__ import annotations

import pytest

from tests.helpers import cli, starter

KEY = {"STRIPE_API_KEY": "sk_test_123"}
LOGIN = "https://billing.stripe.com/p/login/test_abc123"


@pytest.mark.parametrize("settings, key, instead", [
    ({"stripe.update_link": "billing_portal"}, "stripe.update_link", "hosted_invoice"),
    ({"notices.link": "billing_portal"}, "notices.link", "notices.update_url"),
    ({"notices.update_url": None}, "notices", "notices.update_url"),
    ({"notices.update_url": "https://billing.stripe.com/p/session/test_YWNjdF8x"}, "notices.update_url",
     "/p/login/"),
], ids=["dunning-emails", "notices-link", "notices-without-a-link", "notices-session-url"])
def test_check_refuses_a_config_that_would_email_a_portal_session(tmp_path, settings, key, instead):
    config = starter(tmp_path, **settings)
    result = cli(config, "check", env=KEY)
    assert result.exit_code == 2, result.output
    assert key in result.stderr and instead in result.stderr
    assert "Traceback" not in result.output


def test_check_refuses_a_step_that_links_a_portal_session(tmp_path):
    config = starter(tmp_path)
    path = tmp_path / "sequences" / "standard.yaml"
    path.write_text(path.read_text().replace("template: update-card}", "template: update-card, link: billing_portal}",
                                             1))
    result = cli(config, "check", env=KEY)
    assert result.exit_code == 2, result.output
    assert "standard.yaml" in result.stderr and "link" in result.stderr and "expires" in result.stderr
    assert "hosted_invoice" in result.stderr


def test_the_starter_config_links_a_static_portal_login_page(tmp_path):
    """`dunctl init` writes a config that passes `check` and whose notices carry a login link, not a session."""
    made = cli(tmp_path / "unused.yaml", "init", str(tmp_path / "billing"))
    assert made.exit_code == 0, made.output
    config = tmp_path / "billing" / "dunctl.yaml"
    text = config.read_text()
    assert "billing_portal" not in text.replace("# ", "").split("notices:")[1].split("card_expiring")[0]
    assert "update_url: https://billing.stripe.com/p/login/" in text
    first = cli(config, "check", env=KEY)
    assert first.exit_code == 0 and "notices.update_url is still the starter's placeholder" in first.stderr
    configured = starter(tmp_path / "own", **{"notices.update_url": LOGIN})
    own = cli(configured, "check", env=KEY)
    assert own.exit_code == 0 and "placeholder" not in own.stderr
