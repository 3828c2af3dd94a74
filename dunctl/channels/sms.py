"""SMS through Twilio's Messages API. The account SID and auth token are read from the environment at send time."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping

from dunctl.channels import Delivery, SmsMessage
from dunctl.channels.http import basic_auth, post_form
from dunctl.config import SmsChannel
from dunctl.errors import ChannelError


class TwilioTransport:
    def __init__(self, config: SmsChannel, environ: Mapping[str, str]):
        self.config = config
        self.environ = environ

    def _env(self, var: str, what: str) -> str:
        value = self.environ.get(var)
        if not value:
            raise ChannelError(f"the Twilio {what} is not set: environment variable {var} is empty or missing",
                               f"export {var}")
        return value

    def send(self, message: SmsMessage, key: str) -> Delivery:
        """Send one SMS. Twilio's Messages API takes no idempotency key; the engine's claim keeps it to once."""
        sid = self._env(self.config.account_sid_env, "account SID")
        token = self._env(self.config.auth_token_env, "auth token")
        url = (f"{self.config.base_url.rstrip('/')}/2010-04-01/Accounts/"
               f"{urllib.parse.quote(sid, safe='')}/Messages.json")
        label = "Twilio"
        response = post_form(url, {"To": message.to, "From": self.config.from_, "Body": message.body},
                             headers={"Authorization": basic_auth(sid, token), "Accept": "application/json"},
                             timeout=self.config.timeout, label=label, secrets=(token,))
        data = response.json()
        if not response.ok:
            if isinstance(data, dict) and (data.get("code") or data.get("message")):
                raise ChannelError(f"Twilio refused the SMS to {message.to} (HTTP {response.status}): "
                                   f"error {data.get('code')}: {data.get('message')}",
                                   data.get("more_info") if isinstance(data.get("more_info"), str) else None)
            excerpt = response.excerpt()
            raise ChannelError(f"Twilio: HTTP {response.status}" + (f": {excerpt}" if excerpt else ""))
        if not isinstance(data, dict) or not data.get("sid"):
            raise ChannelError(f"Twilio answered HTTP {response.status} without a message sid: "
                               f"{response.excerpt() or 'empty body'}")
        status = data.get("status") or "accepted"
        return Delivery(f"SMS to {message.to} {status} by Twilio", data["sid"])

    def close(self) -> None:
        """Nothing to release (one connection per message); here so every transport can be closed alike."""
