"""A ledger follows one Stripe account (or the simulated one behind `dunctl demo`), for good.

The first sync records which account the key reaches (its id, and live or test mode) in the ledger; a later run
whose key reaches another account is refused before it syncs or acts, with one line naming both. A demo ledger
refuses any real key before a single request is sent. So a cron job pointed at the wrong ledger, a key rolled
into another account's variable, or a demo directory run with production credentials cannot mix two accounts'
invoices, cases and actions.

Checking which account a key reaches costs one request (GET /v1/account). The ledger keeps a salted
fingerprint of the key it last checked (never the key), so the steady-state tick with the same key sends none.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Protocol

from dunctl.errors import DunctlError
from dunctl.ledger.file import read_states

STATE = "stripe_account"          # ledger state: {"id", "livemode", "fingerprint", "salt"}
SIMULATED = "simulated"


class AccountMismatch(DunctlError):
    """The ledger follows another account than the one the key reaches. Nothing was synced or changed."""

    exit_code = 2


class _State(Protocol):
    def get_state(self, name: str, default=None): ...

    def set_state(self, name: str, value) -> None: ...


class _Account(Protocol):
    mode: str

    def account_id(self) -> str: ...


def describe(binding: dict) -> str:
    if binding.get("id") == SIMULATED:
        return "the simulated account of `dunctl demo`"
    mode = "live" if binding.get("livemode") else "test"
    return f"Stripe account {binding['id']} ({mode} mode)" if binding.get("id") else f"a Stripe account in {mode} mode"


def binding_of(state: dict) -> dict | None:
    """The binding in a ledger's state values (name -> decoded JSON); older ledgers know only their mode."""
    if state.get(STATE):
        return state[STATE]
    mode = state.get("account_mode")
    if mode == SIMULATED:
        return {"id": SIMULATED, "livemode": False}
    if mode in ("test", "live"):
        return {"id": None, "livemode": mode == "live"}
    return None


def read_binding(path: str | Path) -> dict | None:
    """The account the ledger at `path` follows, read without creating, migrating or locking it."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    state = read_states(path, [STATE, "account_mode"])
    return None if state is None else binding_of(state)   # None: not a ledger yet, or not readable: the command
                                                          # that opens it will say so


def refuse_if_simulated(binding: dict | None, key_env: str, has_key: bool = True) -> None:
    """A demo ledger never talks to Stripe: refused before any request is built."""
    if binding and binding.get("id") == SIMULATED:
        what = f"the Stripe key in {key_env} is for a real Stripe account" if has_key else \
            "it never syncs with a real Stripe account"
        raise AccountMismatch(f"this ledger follows {describe(binding)}; {what}",
                              hint="point ledger.path at a new file for the real account; the demo's ledger stays "
                                   "a demo")


def _fingerprint(key: str, account: str | None, salt: str) -> str:
    return hashlib.sha256(f"{salt}\0{key}\0{account or ''}".encode()).hexdigest()[:32]


def bind(ledger: _State, gateway: _Account, key: str, key_env: str, account: str | None = None) -> dict:
    """Check that the key (and Connect account) reach the account the ledger follows, recording it on the first
    sync. Costs one request only when the key or account differ from the last ones checked."""
    binding = binding_of({STATE: ledger.get_state(STATE), "account_mode": ledger.get_state("account_mode")})
    refuse_if_simulated(binding, key_env)
    salt = (binding or {}).get("salt") or secrets.token_hex(16)
    fingerprint = _fingerprint(key, account, salt)
    if binding and binding.get("id") and binding.get("fingerprint") == fingerprint:
        return binding
    found = {"id": gateway.account_id(), "livemode": gateway.mode == "live"}
    if binding and ((binding.get("id") and binding["id"] != found["id"])
                    or bool(binding.get("livemode")) != found["livemode"]):
        raise AccountMismatch(f"this ledger follows {describe(binding)}; the key in {key_env}"
                              + (f" with stripe.account {account}" if account else "")
                              + f" reaches {describe(found)}",
                              hint="run one ledger per Stripe account (ledger.path), or fix the key")
    binding = {**found, "fingerprint": fingerprint, "salt": salt}
    ledger.set_state(STATE, binding)
    return binding
