"""What must hold before dunctl touches anything: the ledger file is usable by this user, the secrets a config
names are set, the outbox and log are writable; and (`check --online`) the Stripe key and the SMTP login work.

Every check returns a Finding rather than raising, so `dunctl check` can show all of them at once; the ledger
checks also run (raising) every time a command opens the ledger, so a tick never half-runs on a file it cannot
write. Nothing here sends a message or changes a Stripe object.
"""

from __future__ import annotations

import os
import re
import smtplib
import socket
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from dunctl.errors import DunctlError
from dunctl.ledger.file import can_use, check_writable_dir, has_table, ledger_file_problem, quick_check, \
    read_only_connection, read_state
from dunctl.stripe_permissions import PROBES, key_hint, label, needed_permissions, scrub


@dataclass
class Finding:
    """One preflight check: what was checked, whether it passed, and how to fix it when it did not."""

    check: str
    ok: bool
    detail: str
    hint: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# -- the ledger file --------------------------------------------------------------------------------------------


def inspect_ledger(path: Path) -> dict:
    """Open the ledger read-only (no migration, no WAL files created by us) and return what `check` reports:
    the account it follows. Raises UsageError for a damaged ledger or one written by a newer dunctl."""
    with read_only_connection(path) as conn:
        quick_check(conn, path)
        return {"account_mode": read_state(conn, "account_mode") if has_table(conn, "sync_state") else None}


# -- what a config needs ---------------------------------------------------------------------------------------


def _secret(environ: Mapping[str, str], var: str | None, what: str) -> Finding:
    if var and (environ.get(var) or "").strip():
        return Finding(what, True, f"{var} is set")
    return Finding(what, False, f"environment variable {var} is not set", f"export {var}=... before running dunctl")


def secret_findings(config, environ: Mapping[str, str], *, simulated: bool) -> list[Finding]:
    """The Stripe key and every configured channel's credentials, present in the environment."""
    findings = []
    var = config.file.stripe.api_key_env
    if simulated:
        findings.append(Finding("stripe key", True, "not needed: this ledger follows the simulated account"))
    else:
        key = (environ.get(var) or "").strip()
        if not key:
            findings.append(Finding("stripe key", False, f"environment variable {var} is not set",
                                    f"export {var}=rk_live_... ({key_hint()}; `dunctl check --online` "
                                    "names what this config needs)"))
        elif not re.match(r"^(sk|rk)_(test|live)_", key):
            findings.append(Finding("stripe key", False, f"{var} does not hold a Stripe secret or restricted key",
                                    "secret keys start with sk_, restricted keys with rk_"))
        else:
            mode = "live" if "_live_" in key[:8] else "test"
            findings.append(Finding("stripe key", True, f"{var} is set ({mode} mode)"))
    channels = config.file.channels
    email = channels.email
    if email and email.transport == "smtp" and (email.username_env or email.password_env):
        findings.append(_secret(environ, email.username_env, "email: SMTP username"))
        findings.append(_secret(environ, email.password_env, "email: SMTP password"))
    if channels.slack:
        findings.append(_secret(environ, channels.slack.webhook_url_env, "slack: webhook URL"))
    if channels.webhook:
        if channels.webhook.url_env or not channels.webhook.url:
            findings.append(_secret(environ, channels.webhook.url_env, "webhook: URL"))
        findings.append(_secret(environ, channels.webhook.secret_env, "webhook: signing secret"))
    if channels.sms:
        findings.append(_secret(environ, channels.sms.account_sid_env, "sms: Twilio account SID"))
        findings.append(_secret(environ, channels.sms.auth_token_env, "sms: Twilio auth token"))
    return findings


def path_findings(config, log_path: Path | None = None) -> list[Finding]:
    """The ledger (readable and writable, or creatable), the outbox and the log file's directory."""
    findings = []
    path = config.ledger_path
    problem = ledger_file_problem(path, must_exist=True)
    if problem is None:
        try:
            inspect_ledger(path)
        except DunctlError as exc:
            problem = exc
    if problem is None:
        findings.append(Finding("ledger", True, f"{path} is readable and writable"))
    else:
        findings.append(Finding("ledger", False, problem.message, problem.hint))
    email = config.file.channels.email
    if email and email.transport == "file":
        outbox = (config.base_dir / email.dir).resolve()
        problem = check_writable_dir(outbox, "the outbox")
        findings.append(Finding("email: outbox", problem is None, problem or f"{outbox} is writable",
                                None if problem is None else "set channels.email.dir to a writable directory"))
    if log_path is None and config.file.log.path:
        log_path = config.base_dir / config.file.log.path
    if log_path is not None:
        log_path = Path(log_path).resolve()
        problem = check_writable_dir(log_path.parent, "the log's directory")
        if problem is None and log_path.exists() and not can_use(log_path, os.W_OK):
            problem = f"the log file {log_path} is not writable"
        findings.append(Finding("log file", problem is None, problem or f"{log_path} can be appended to",
                                None if problem is None else "set log.path to a writable file"))
    return findings


# -- online: Stripe and SMTP answer ----------------------------------------------------------------------------

def _said(exc) -> str:
    """What Stripe said, without the key: its messages quote it (masked in a 401, whole through some proxies)."""
    return scrub(exc.user_message or str(exc)) or type(exc).__name__


def stripe_online(config, environ: Mapping[str, str]) -> list[Finding]:
    """Call Stripe with the configured key: does it work, which mode and account, and does it hold every
    permission the config needs. Only reads, and writes aimed at objects that do not exist."""
    import stripe   # lazy: see dunctl/lazy.py

    stripe_config = config.file.stripe
    key = (environ.get(stripe_config.api_key_env) or "").strip()
    if not key:
        return [Finding("stripe: online", False, f"not tried: {stripe_config.api_key_env} is not set")]
    # With `stripe.account` (Connect) every probe carries the Stripe-Account header, as the tick's requests do:
    # the permissions that count are the key's on the connected account, not on the platform.
    client = stripe.StripeClient(key, base_addresses={"api": stripe_config.api_base} if stripe_config.api_base
                                 else None, stripe_account=stripe_config.account, max_network_retries=0)
    mode = "live" if key.startswith(("sk_live_", "rk_live_")) else "test"
    findings = []
    try:
        account = client.raw_request("get", "/v1/account")
        data = account.data if hasattr(account, "data") else {}
        name = ((data.get("settings") or {}).get("dashboard") or {}).get("display_name") or \
            (data.get("business_profile") or {}).get("name")
        who = f"account {data.get('id')}" + (f" ({name})" if name else "")
    except stripe.AuthenticationError:
        return [Finding("stripe: key", False, f"Stripe rejected the key in {stripe_config.api_key_env} (401)",
                        f"check that {stripe_config.api_key_env} holds a current key; rolled keys stop working")]
    except stripe.APIConnectionError as exc:
        return [Finding("stripe: key", False, f"could not reach Stripe: {_said(exc)}",
                        "check the network (or stripe.api_base)")]
    except stripe.StripeError as exc:
        if _unreachable(exc):
            return [_unreachable_finding(exc)]
        # A restricted key may not read the account; its 403 still names it.
        found = _account_named(exc)
        who = f"account {found}" if found else "account not readable by this key"
    findings.append(Finding("stripe: key", True, f"works: {mode} mode, {who}"))
    for permission, whys in needed_permissions(config).items():
        findings.append(_probe(client, permission, whys))
    return findings


def _probe(client, permission: tuple[str, str], whys: list[str]) -> Finding:
    """One permission, tried with a request that needs it and changes nothing (dunctl/stripe_permissions.py)."""
    import stripe   # lazy: see dunctl/lazy.py

    method, path, params = PROBES[permission]
    check, why = f"stripe: {label(permission)}", "; ".join(whys)
    try:
        client.raw_request(method, path, **params)
    except stripe.PermissionError as exc:
        if _unreachable(exc):
            return _unreachable_finding(exc)
        return Finding(check, False, f"the key lacks {label(permission)}, needed for {why}",
                       f"give the restricted key {label(permission)} on the Dashboard's API keys page")
    except stripe.InvalidRequestError:
        pass  # the probe's object does not exist: the permission let the request through
    except stripe.StripeError as exc:
        return Finding(check, False, f"Stripe did not answer the check: {_said(exc)}")
    return Finding(check, True, f"granted ({why})")


def _account_named(exc) -> str | None:
    found = re.search(r"account '(acct_[A-Za-z0-9]+)'", exc.user_message or "")
    return found.group(1) if found else None


def _unreachable(exc) -> bool:
    """Stripe's 403 for a Stripe-Account header naming an account the key cannot act on."""
    return "does not have access to account" in (exc.user_message or "")


def _unreachable_finding(exc) -> Finding:
    return Finding("stripe: account", False,
                   f"the key cannot reach Stripe account {_account_named(exc) or '(stripe.account)'}",
                   "check stripe.account, and that the account is still connected to your platform")


def smtp_online(config, environ: Mapping[str, str]) -> list[Finding]:
    """Connect to the SMTP server, STARTTLS and log in as configured, then quit: nothing is sent."""
    email = config.file.channels.email
    if email is None or email.transport != "smtp":
        return []
    where = f"{email.host}:{email.port}"
    user = environ.get(email.username_env) if email.username_env else None
    password = environ.get(email.password_env) if email.password_env else None
    if (email.username_env or email.password_env) and not (user and password):
        return [Finding("email: SMTP login", False, "not tried: the SMTP credentials are not set")]
    smtp = None
    try:
        context = ssl.create_default_context()
        if email.security == "tls":
            smtp = smtplib.SMTP_SSL(email.host, email.port, timeout=email.timeout, context=context)
        else:
            smtp = smtplib.SMTP(email.host, email.port, timeout=email.timeout)
        smtp.ehlo_or_helo_if_needed()
        if email.security == "starttls":
            if not smtp.has_extn("starttls"):
                return [Finding("email: SMTP login", False, f"{where} does not offer STARTTLS",
                                "set channels.email.security to match the server")]
            smtp.starttls(context=context)
            smtp.ehlo()
        if user:
            smtp.login(user, password)
            detail = f"logged in to {where} as {user}"
        else:
            detail = f"connected to {where} (no login configured)"
        smtp.quit()
        smtp = None
        return [Finding("email: SMTP login", True, detail + "; nothing sent")]
    except smtplib.SMTPAuthenticationError as exc:
        return [Finding("email: SMTP login", False, f"{where} refused the login for {user!r}: {exc.smtp_code}",
                        f"check {email.username_env} and {email.password_env}")]
    except (smtplib.SMTPException, OSError, socket.timeout, ssl.SSLError) as exc:
        text = str(exc).replace(password, "***") if password else str(exc)
        return [Finding("email: SMTP login", False, f"could not reach {where}: {text or type(exc).__name__}",
                        "check channels.email.host, port and security")]
    finally:
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass


def preflight(config, environ: Mapping[str, str], *, online: bool = False,
              log_path: Path | None = None) -> list[Finding]:
    """Every check `dunctl check` runs, in the order a person fixes them."""
    findings = path_findings(config, log_path)
    if config.file.mode == "monitor":
        findings.append(Finding("mode", True, "monitor: ticks plan and record every step as 'would', send nothing "
                                              "and write nothing to Stripe; set mode: live when ready"))
    simulated = False
    if findings[0].ok:
        simulated = inspect_ledger(config.ledger_path).get("account_mode") == "simulated"
    findings += secret_findings(config, environ, simulated=simulated)
    if online:
        if not simulated:
            findings += stripe_online(config, environ)
        findings += smtp_online(config, environ)
    return findings
