"""Slack: a message to an incoming webhook. The webhook URL is a secret, read from the environment at send time.

Everything posted is data, never Slack markup: `&`, `<` and `>` are escaped and control characters removed, so a
customer named `<!channel>` or `<http://evil|your bank>` notifies no one and links nowhere (dunctl's own texts
use no angle-bracket syntax; bare URLs are still linked by Slack). The URL never appears in an error, even when
the endpoint (or a proxy in front of it) echoes it back.
"""

from __future__ import annotations

from collections.abc import Mapping

from dunctl.channels import Delivery
from dunctl.channels.http import post_json, status_error
from dunctl.config import SlackChannel
from dunctl.errors import ChannelError
from dunctl.sanitize import slack_blocks, slack_text


class SlackTransport:
    def __init__(self, config: SlackChannel, environ: Mapping[str, str], *, timeout: float | None = None):
        self.config = config
        self.environ = environ
        self.timeout = config.timeout if timeout is None else timeout

    @property
    def label(self) -> str:
        return f"Slack webhook ({self.config.webhook_url_env})"

    def post(self, text: str, blocks: list | None, key: str) -> Delivery:
        """Post `text` (the notification and fallback) with optional Block Kit `blocks`.

        Incoming webhooks take no idempotency key; `key` is accepted for a uniform interface and named in the
        detail so the timeline can tie the post to its action.
        """
        var = self.config.webhook_url_env
        url = self.environ.get(var)
        if not url:
            raise ChannelError(f"the Slack webhook URL is not set: environment variable {var} is empty or missing",
                               f"export {var}=https://hooks.slack.com/services/...")
        payload: dict = {"text": slack_text(text)}
        if blocks:
            payload["blocks"] = slack_blocks(blocks)
        response = post_json(url, payload, timeout=self.timeout, label=self.label, secrets=(url,))
        if not response.ok:
            raise status_error(self.label, response)
        return Delivery(f"posted to Slack (HTTP {response.status})")

    def close(self) -> None:
        """Nothing to release (one connection per post); here so every transport can be closed the same way."""
