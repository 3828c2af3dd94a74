"""Slack: a message to an incoming webhook. The webhook URL is a secret, read from the environment at send time."""

from __future__ import annotations

from typing import Mapping

from dunctl.channels import Delivery
from dunctl.channels.http import post_json, status_error
from dunctl.config import SlackChannel
from dunctl.errors import ChannelError

TIMEOUT = 15


class SlackTransport:
    def __init__(self, config: SlackChannel, environ: Mapping[str, str], *, timeout: float = TIMEOUT):
        self.config = config
        self.environ = environ
        self.timeout = timeout

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
        payload: dict = {"text": text}
        if blocks:
            payload["blocks"] = blocks
        response = post_json(url, payload, timeout=self.timeout, label=self.label)
        if not response.ok:
            raise status_error(self.label, response)
        return Delivery(f"posted to Slack (HTTP {response.status})")
