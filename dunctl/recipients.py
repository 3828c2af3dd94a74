"""Who a customer message goes to: `to:` and `cc:` rules and literal addresses, resolved against the customer.

Rules:
- `billing_contact`: every address in customer metadata `billing_emails` (comma- or semicolon-separated) and
  `billing_email`, then the customer's current email (the customers table, kept current by sync; the invoice's
  `customer_email` is frozen by Stripe at finalisation, so it is only the fallback when the customer has none).
- `customer`: the customer's current email, else the invoice's.
- `account_manager`: customer metadata `account_manager_email`.
- anything with an `@`: that address.

Addresses are deduplicated case-insensitively (first occurrence wins, `to` before `cc`), and every one is validated:
a malformed address is returned in `rejected` with the reason and never reaches SMTP; the others still get the
message.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field

RULES = ("billing_contact", "customer", "account_manager")

# A pragmatic addr-spec: dot-atom local part, a domain of dot-separated labels with a TLD. Quoted local parts and
# IP-literal domains are legal but never what a billing contact means; they are rejected with a reason.
_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# A valid ASCII address as the checks of address_problem read it (the local part, each label, two labels at
# least, an optional final dot); group 1 the local part, group 2 the last label.
_PLAIN_ADDRESS = re.compile(r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)@"
                            r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                            r"([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)\.?")
# Any Unicode space (the same characters as str.isspace): one regex scan, not a Python step per character, on
# every address of every message.
_SPACE = re.compile(r"\s")


@dataclass
class Recipients:
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)   # (address or rule, reason)

    @property
    def all(self) -> list[str]:
        return self.to + self.cc


@functools.lru_cache(maxsize=4096)   # a message checks its recipients' addresses twice (To, then its context)
def address_problem(address: str) -> str | None:
    """Why `address` cannot be sent to, or None when it is a valid address."""
    plain = _PLAIN_ADDRESS.fullmatch(address)
    if plain is not None and len(address) <= 254 and len(plain[1]) <= 64 and not plain[2].isdigit():
        return None   # what the checks below pass, in one pass: almost every address is one
    if any(c in address for c in "\r\n\0"):
        return "contains a line break (header injection)"
    if not address:
        return "empty address"
    if _SPACE.search(address):
        return "contains a space"
    if len(address) > 254:
        return "longer than 254 characters"
    if address.count("@") != 1:
        return "needs exactly one @" if "@" in address else "has no @"
    local, domain = address.split("@")
    if not local or len(local) > 64 or not _LOCAL.match(local):
        return "the part before @ is not valid"
    labels = domain.rstrip(".").split(".") if domain else []
    if len(labels) < 2:
        return "the domain has no dot (e.g. example.com)"
    try:
        ascii_labels = [label.encode("idna").decode("ascii") if not label.isascii() else label for label in labels]
    except UnicodeError:
        return "the domain is not valid"
    if not all(_LABEL.match(label) for label in ascii_labels) or ascii_labels[-1].isdigit():
        return "the domain is not valid"
    return None


def metadata_of(customer: dict | None) -> dict:
    """The customer's metadata, parsed once per text (read, never changed: callers share it)."""
    raw = (customer or {}).get("metadata") or {}
    if isinstance(raw, str):
        raw = _parsed(raw)
    return raw if isinstance(raw, dict) else {}


@functools.lru_cache(maxsize=256)   # one customer's metadata is read for each rule of a message, and for its greeting
def _parsed(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return {}


def _split(value) -> list[str]:
    if not value:
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in re.split(r"[,;]", str(value)) if part.strip()]


def current_email(customer: dict | None, invoice: dict | None) -> str | None:
    """The customer's email now; the invoice's copy (frozen at finalisation) only when the customer has none."""
    return (customer or {}).get("email") or (invoice or {}).get("customer_email") or None


def expand(rule: str, customer: dict | None, invoice: dict | None) -> tuple[list[str], str | None]:
    """The addresses one rule or literal stands for, and why it gave none (when it gave none)."""
    metadata = metadata_of(customer)
    if rule == "billing_contact":
        found = _split(metadata.get("billing_emails")) + _split(metadata.get("billing_email"))
        email = current_email(customer, invoice)
        found += [email] if email else []
        return found, None if found else "the customer has no email and no billing contact"
    if rule == "customer":
        email = current_email(customer, invoice)
        return ([email], None) if email else ([], "the customer has no email")
    if rule == "account_manager":
        found = _split(metadata.get("account_manager_email"))
        return found, None if found else "the customer has no metadata.account_manager_email"
    return [rule.strip()], None


def as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def resolve_recipients(step, customer: dict | None, invoice: dict | None = None) -> Recipients:
    """The message's To and Cc for `step` (its `to`, default billing_contact, and `cc`), deduplicated and
    validated. `customer` is the ledger's customers row (metadata as JSON text or a dict); `invoice` its row."""
    result = Recipients()
    seen: set[str] = set()
    to_rules = as_list(getattr(step, "to", None)) or ["billing_contact"]
    for rules, bucket in ((to_rules, result.to), (as_list(getattr(step, "cc", None)), result.cc)):
        for rule in rules:
            addresses, why_none = expand(rule, customer, invoice)
            if why_none:
                result.rejected.append((rule, why_none))
            for address in addresses:
                problem = address_problem(address)
                if problem:
                    if (address, problem) not in result.rejected:
                        result.rejected.append((address, problem))
                    continue
                key = address.lower()
                if key not in seen:
                    seen.add(key)
                    bucket.append(address)
    if not result.to and result.cc:
        # Nobody left in To (every to-address rejected or missing): the cc'd people are then the recipients.
        result.to, result.cc = result.cc, []
    return result
