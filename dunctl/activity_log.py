"""The activity log: one JSON line per action and one per tick, appended to a file, for teams that ship logs.

Each line says what happened, to whom and with what result. The values of every secret the config names (Stripe
key, SMTP password, Slack URL, Twilio token, webhook secret) and anything shaped like a Stripe key are replaced
by `***` before a line is written. The file is created with mode 0600: it names customers.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from dunctl.clock import iso

_STRIPE_KEY = re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]+")


def secret_values(config, environ: Mapping[str, str]) -> list[str]:
    """The values of the environment variables the config names for secrets."""
    names = [config.file.stripe.api_key_env]
    channels = config.file.channels
    if channels.email:
        names += [channels.email.password_env, channels.email.username_env]
    if channels.slack:
        names.append(channels.slack.webhook_url_env)
    if channels.webhook:
        names += [channels.webhook.secret_env, channels.webhook.url_env]
    if channels.sms:
        names += [channels.sms.auth_token_env, channels.sms.account_sid_env]
    return [environ[n] for n in names if n and environ.get(n) and len(environ[n]) >= 4]


def _scrub(value, secrets: list[str]):
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return _STRIPE_KEY.sub("***", value)
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    return value


def tick_lines(result) -> list[dict]:
    """The log records of one tick (a dunctl.tick.TickResult): each action, then the tick itself."""
    at = iso(result.now)
    mode = getattr(result, "mode", "live")
    lines = [{"at": at, "event": "action", "mode": mode, "dry_run": result.dry_run, "invoice_id": a.invoice_id,
              "step": a.step, "action": a.action, "to": getattr(a, "recipient", None),
              "subject": getattr(a, "subject", None), "status": a.status, "detail": a.detail}
             for a in result.actions]
    statuses = [a.status for a in result.actions]
    lines.append({"at": at, "event": "tick", "mode": mode, "dry_run": result.dry_run, "ok": result.ok,
                  "opened": len(result.opened), "closed": len(result.closed), "actions": len(statuses),
                  "done": statuses.count("done"), "failed": statuses.count("failed"), "errors": result.errors})
    return lines


def append_tick(path: Path, result, secrets: Iterable[str] = ()) -> None:
    """Append the tick's lines to `path` (created 0600). One write per line, so concurrent writers never
    interleave within a line."""
    secrets = sorted((s for s in secrets if s), key=len, reverse=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        for line in tick_lines(result):
            os.write(fd, (json.dumps(_scrub(line, secrets), separators=(",", ":")) + "\n").encode())
    finally:
        os.close(fd)
