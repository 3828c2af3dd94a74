import pytest

from tests.servers import http_receiver, smtp_server  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    """No test sees the developer's real keys or config."""
    for name in ("STRIPE_API_KEY", "DUNCTL_CONFIG", "SLACK_WEBHOOK_URL", "DUNCTL_WEBHOOK_SECRET",
                 "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "SMTP_USERNAME", "SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
