"""Failure classification: every Stripe decline code, advice code and bank return code maps to a failure type.

This module is data first. The sequences decide what to do about each type (see DESIGN.md, "Failure types");
this table only says which type a failure is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

CARD_HARD = "card_hard"
CARD_UPDATE = "card_update"
ACTION_REQUIRED = "action_required"
CARD_SOFT = "card_soft"
BANK_SOFT = "bank_soft"
BANK_HARD = "bank_hard"
DISPUTE = "dispute"
UNKNOWN = "unknown"
# Not a failure: a net-terms invoice (collection_method send_invoice) the customer pays by its due date
# (dunctl/receivables). Its case is timed from the due date; nothing is charged unless the customer has a payment
# method and the sequence asks for a retry.
NET_TERMS = "net_terms"

FAILURE_TYPES = (CARD_HARD, CARD_UPDATE, ACTION_REQUIRED, CARD_SOFT, BANK_SOFT, BANK_HARD, DISPUTE, UNKNOWN,
                 NET_TERMS)

# Types for which an automatic retry of the same payment method must never happen.
NEVER_RETRY = frozenset({CARD_HARD, BANK_HARD, DISPUTE, ACTION_REQUIRED})
# Types that may be retried only once the customer has changed the payment method.
RETRY_AFTER_UPDATE = frozenset({CARD_UPDATE})

# What each type means, in words a customer (and a finance person) understands. Fraud, lost and stolen get
# the generic wording on purpose: the message must not accuse anyone.
PLAIN_WORDS = {
    CARD_HARD: "your bank declined the card and it can't be charged again",
    CARD_UPDATE: "the card details on file need updating",
    ACTION_REQUIRED: "your bank asked you to confirm the payment",
    CARD_SOFT: "your bank declined the payment",
    BANK_SOFT: "your bank returned the payment for insufficient funds",
    BANK_HARD: "your bank could not debit the account on file",
    DISPUTE: "the payment is under dispute",
    UNKNOWN: "the payment did not go through",
    NET_TERMS: "the invoice is not paid yet",
}
# A bank debit returned for another reason than missing money (could_not_process, SEPA MS03 "reason not
# specified"): telling the customer "insufficient funds" would be wrong, and an accusation.
BANK_RETURNED = "bank_returned"
PLAIN_WORDS[BANK_RETURNED] = "your bank returned the direct debit"
# The codes that do mean missing money on a bank debit.
INSUFFICIENT_FUNDS_CODES = frozenset({"insufficient_funds", "R01", "R09", "AM04"})

_CARD_DECLINE_CODES: dict[str, str] = {}


def _codes(failure_type: str, codes: str) -> None:
    for code in codes.split():
        _CARD_DECLINE_CODES[code] = failure_type


# Card declines: Stripe's decline codes (dunctl/data/stripe_decline_codes.txt) and the error codes of a failed
# payment (dunctl/data/stripe_payment_error_codes.txt). The reason for each group is above it.

# The issuer will not take this card again: stolen, closed, blocked or refused by the cardholder.
_codes(CARD_HARD, """
    lost_card stolen_card pickup_card fraudulent merchant_blacklist restricted_card security_violation
    revocation_of_authorization revocation_of_all_authorizations stop_payment_order transaction_not_allowed
    not_permitted service_not_allowed invalid_account do_not_try_again
""")
# Never retried although the card may be fine (the type that forbids a retry): a duplicate_transaction means a
# payment of the same amount just went through (retrying may charge twice); invalid_amount is over what the
# card may pay, and repeats identically; testmode_decline is a real card used in test mode, which no retry fixes.
_codes(CARD_HARD, "duplicate_transaction invalid_amount testmode_decline")
# The payment method is restricted from this kind of payment by its issuer or Stripe: ask for another one.
_codes(CARD_HARD, "payment_method_restricted")
# The card details are wrong or out of date: retry only after the customer updates them.
_codes(CARD_UPDATE, """
    expired_card incorrect_number invalid_number incorrect_cvc invalid_cvc invalid_expiry_month
    invalid_expiry_year incorrect_zip card_not_supported currency_not_supported
    new_account_information_available incorrect_pin invalid_pin pin_try_exceeded offline_pin_required
    online_or_offline_pin_required
""")
# expired_payment_method: the saved method itself expired; incorrect_postal_code / incorrect_address: the
# billing address on file failed the issuer's check. All three are fixed by new details, not by waiting.
_codes(CARD_UPDATE, "expired_payment_method incorrect_postal_code incorrect_address")
# The issuer wants the cardholder present (3D Secure): authentication_failure and
# payment_intent_authentication_failure (the customer failed or abandoned it), authentication_not_handled (the
# payment needed authentication the off-session charge could not do). The hosted invoice page lets them finish.
_codes(ACTION_REQUIRED, """
    authentication_required authentication_failure payment_intent_authentication_failure
    authentication_not_handled
""")
# Temporary: funds, limits, issuer or network trouble. Retrying later can work.
_codes(CARD_SOFT, """
    insufficient_funds card_velocity_exceeded withdrawal_count_limit_exceeded processing_error
    issuer_not_available try_again_later reenter_transaction approve_with_id generic_decline do_not_honor
    call_issuer no_action_taken card_declined
""")
# card_decline_rate_limit_exceeded: Stripe blocks the card for 24 hours after too many declines; a retry after
# that may work (network_retry_wait holds it). payment_method_provider_decline on a card is the wallet or
# provider declining without a reason, like generic_decline.
_codes(CARD_SOFT, "card_decline_rate_limit_exceeded payment_method_provider_decline")
# Codes of API version 2026-10-28.endive that were still unknown (issue #21). The card or method cannot do
# what this payment needs (its type, currency, a 3D Secure it does not support, details the network or issuer
# requires): another payment method, or new details, fix it; the same one retried fails the same way.
_codes(CARD_UPDATE, """
    invalid_card_type payment_method_currency_mismatch payment_method_unsupported_type
    payment_intent_incompatible_payment_method token_card_network_invalid three_d_secure_authentication_not_supported
    cardholder_phone_number_required payment_method_billing_details_address_missing
    india_recurring_payment_mandate_canceled
""")
# The customer must act on the payment themselves: authenticate (3D Secure, a setup's authentication), approve it
# in their provider's app, or finish a redirect or session that expired. The hosted invoice page lets them.
_codes(ACTION_REQUIRED, """
    payment_intent_action_required invoice_payment_intent_requires_action setup_intent_authentication_failure
    three_d_secure_authentication_upstream_error payment_method_customer_decline
    payment_intent_payment_attempt_expired acss_debit_session_incomplete
""")
# The provider (a wallet, a bank network) was unavailable or slow this time, or the amount is over a per-payment
# or per-period limit of the source: a later retry can work.
_codes(CARD_SOFT, """
    payment_method_provider_timeout payment_method_not_available charge_exceeds_source_limit
    charge_exceeds_transaction_limit
""")

# Codes that say only "it failed" and carry no reason: the reason is in another field, so they never decide.
GENERIC_CODES = frozenset({"card_declined", "payment_intent_payment_attempt_failed"})
_codes(UNKNOWN, "payment_intent_payment_attempt_failed")

# Bank debits (ACH and SEPA): Stripe's normalised charge failure_code, the NACHA return code and the SEPA reason
# code (dunctl/data/bank_return_codes.txt), and the bank-side API error codes.
BANK_RETURN_CODES: dict[str, str] = {}


def _bank(failure_type: str, codes: str) -> None:
    for code in codes.split():
        BANK_RETURN_CODES[code] = failure_type


# Money was missing, or the bank could not process it this time: re-presenting later can work (at most twice in
# 180 days under NACHA rules). MS03 is "reason not specified" from the bank, not from the customer.
_bank(BANK_SOFT, "insufficient_funds R01 R09 AM04 MS03 generic_could_not_process could_not_process")
# The account is closed, wrong, frozen, restricted, or its owner changed or died: new details are needed.
_bank(BANK_HARD, """
    account_closed bank_account_closed R02 no_account invalid_account_number bank_account_invalid_details R03 R04
    account_frozen bank_account_frozen R16 bank_account_restricted R20 recipient_deceased R14 R15
    bank_ownership_changed R12 branch_does_not_exist R13 invalid_currency AC01 AC04 AC06 AC13 RC01 BE05 CNOR DNOR
""")
# The customer (or their bank for them) says the debit was not authorised or the mandate is gone: a new
# mandate is needed, and re-presenting without one breaks NACHA and SEPA rules. MS02 is "refused by the
# debtor": usually the customer refusing the debit, so it is not a soft failure.
_bank(BANK_HARD, """
    debit_not_authorized R05 R07 R08 R10 R11 R29 R31 MD01 MD02 MD06 MD07 MS02 payment_intent_mandate_invalid
""")
# The bank refuses this kind of debit on this account for good: regulatory (RR01-04), blocked (AG01, SL01,
# payment_method_bank_account_blocked), unusable for debits (AG02, sepa_unsupported_account,
# bank_account_unusable, bank_account_declined, payment_method_provider_decline, payment_method_restricted).
_bank(BANK_HARD, """
    AG01 AG02 RR01 RR02 RR03 RR04 SL01 payment_method_bank_account_blocked sepa_unsupported_account
    bank_account_unusable bank_account_declined payment_method_provider_decline payment_method_restricted
""")
# The mandate is invalid, or the account was never verified (microdeposits failed, timed out or were entered
# wrong too often; routing number bad; account restricted): only new details or a new mandate fix it (endive
# codes that were still unknown, issue #21).
_bank(BANK_HARD, """
    billing_invalid_mandate setup_intent_mandate_invalid bank_account_unverified bank_account_verification_failed
    bank_account_bad_routing_numbers bank_account_restricted payment_method_microdeposit_failed
    payment_method_microdeposit_verification_amounts_invalid payment_method_microdeposit_verification_amounts_mismatch
    payment_method_microdeposit_verification_attempts_exceeded payment_method_microdeposit_verification_timeout
    payment_method_microdeposit_verification_descriptor_code_mismatch payment_method_unactivated
""")
# Never re-presented: a duplicate (R24, AM05) was already collected; R06 is our own bank recalling the debit,
# R17/R23/R33/FF01 are entries the bank could not accept as sent. A person looks first.
_bank(BANK_HARD, "R06 R17 R23 R24 R33 AM05 FF01")

ADVICE_CODES = {
    "do_not_try_again": CARD_HARD,
    "confirm_card_data": CARD_UPDATE,
    "try_again_later": CARD_SOFT,
}
# Mastercard Merchant Advice Codes: 03 and 21 forbid any retry; 01 asks for updated card data; 04 says the
# token's requirements were not met, which only new card details fix; 24-30 allow a retry after a wait
# (NETWORK_RETRY_WAITS).
NETWORK_ADVICE_CODES = {"03": CARD_HARD, "21": CARD_HARD, "01": CARD_UPDATE, "04": CARD_UPDATE, "02": CARD_SOFT,
                        "24": CARD_SOFT, "25": CARD_SOFT, "26": CARD_SOFT, "27": CARD_SOFT, "28": CARD_SOFT,
                        "29": CARD_SOFT, "30": CARD_SOFT}
# "Retry after 1 hour / 24 hours / 2 days / 4 days / 6 days / 8 days / 10 days": retrying sooner is a
# Mastercard excessive-retry violation (fees, and the retry is declined anyway).
NETWORK_RETRY_WAITS = {"24": timedelta(hours=1), "25": timedelta(hours=24), "26": timedelta(days=2),
                       "27": timedelta(days=4), "28": timedelta(days=6), "29": timedelta(days=8),
                       "30": timedelta(days=10)}
# Stripe blocks a card for 24 hours after too many declines in a short time.
CODE_RETRY_WAITS = {"card_decline_rate_limit_exceeded": timedelta(hours=24)}
OUTCOME_REASONS = {"previously_declined_do_not_retry": CARD_HARD}

BANK_METHOD_TYPES = frozenset({"us_bank_account", "sepa_debit", "bacs_debit", "acss_debit", "au_becs_debit",
                               "ach_debit"})


@dataclass(frozen=True)
class Decline:
    """What Stripe said about one failed attempt, as raw codes."""

    code: str | None = None              # last_payment_error.code ('card_declined', 'expired_card', ...)
    decline_code: str | None = None      # last_payment_error.decline_code
    advice_code: str | None = None       # last_payment_error.advice_code
    network_decline_code: str | None = None   # the raw network code: issuer response, NACHA R.., SEPA reason
    network_advice_code: str | None = None    # Mastercard Merchant Advice Code ('03', '24', ...)
    failure_code: str | None = None      # charge.failure_code: Stripe's normalised code (bank debits: R01 -> ...)
    outcome_reason: str | None = None    # charge.outcome.reason
    payment_intent_status: str | None = None
    payment_method_type: str | None = None
    message: str | None = None

    @property
    def shown_code(self) -> str | None:
        """The most specific normalised code (what segment conditions match on), else the raw one."""
        return _shown(self.decline_code, self.failure_code, self.code, self.network_advice_code,
                      self.network_decline_code)

    @property
    def described_code(self) -> str | None:
        """The code for people to read: the normalised one, with the raw network code beside it when it differs
        ('insufficient_funds (R01)')."""
        return described_code(asdict(self))


def _shown(decline_code, failure_code, code, network_advice_code, network_decline_code=None) -> str | None:
    # A generic code ('card_declined') is shown only when nothing more specific is known.
    specific = [c for c in (decline_code, failure_code, code) if c and c not in GENERIC_CODES]
    return (specific[0] if specific else None) or decline_code or failure_code or code or network_decline_code \
        or network_advice_code


def shown_code(decline: dict | None) -> str | None:
    """The most specific code of a decline stored as JSON in the ledger (see Decline.shown_code)."""
    if not decline:
        return None
    return _shown(decline.get("decline_code"), decline.get("failure_code"), decline.get("code"),
                  decline.get("network_advice_code"), decline.get("network_decline_code"))


def described_code(decline: dict | None) -> str | None:
    """A stored decline's code for people to read, normalised first and raw beside it (Decline.described_code)."""
    shown = shown_code(decline)
    raw = (decline or {}).get("network_decline_code")
    if shown and raw and raw != shown:
        return f"{shown} ({raw})"
    return shown


def classify(decline: Decline) -> str:
    """The failure type of one failed attempt. Signals that forbid retrying win over everything else; otherwise
    Stripe's normalised code decides, and the raw network code only where the normalised one says nothing."""
    for table, value in ((ADVICE_CODES, decline.advice_code),
                         (NETWORK_ADVICE_CODES, decline.network_advice_code),
                         (OUTCOME_REASONS, decline.outcome_reason)):
        if value in table and table[value] in (CARD_HARD, CARD_UPDATE):
            return table[value]
    normalised = [c for c in (decline.failure_code, decline.decline_code, decline.code) if c]
    raw = decline.network_decline_code
    is_bank = decline.payment_method_type in BANK_METHOD_TYPES
    bank_only = [c for c in normalised + [raw] if c in BANK_RETURN_CODES and c not in _CARD_DECLINE_CODES]
    if is_bank or (decline.payment_method_type is None and bank_only):
        by_code = next((BANK_RETURN_CODES[c] for c in normalised if c in BANK_RETURN_CODES), None)
        by_raw = BANK_RETURN_CODES.get(raw or "")
        # A raw return code that forbids re-presenting (MS02, R10) wins over a normalised code that would allow it.
        if by_raw == BANK_HARD:
            return BANK_HARD
        return by_code or by_raw or UNKNOWN
    for value in (decline.decline_code, decline.code, decline.failure_code):
        if value in _CARD_DECLINE_CODES and value not in GENERIC_CODES:
            return _CARD_DECLINE_CODES[value]
    if decline.payment_intent_status == "requires_action":
        return ACTION_REQUIRED
    if decline.advice_code in ADVICE_CODES:
        return ADVICE_CODES[decline.advice_code]
    if decline.network_advice_code in NETWORK_ADVICE_CODES:
        return NETWORK_ADVICE_CODES[decline.network_advice_code]
    # A bare card_declined with no decline code is Stripe's generic decline; an unrecognised decline code stays
    # unknown so that it is shown raw and capped tighter.
    if decline.decline_code is None and "card_declined" in (decline.code, decline.failure_code):
        return CARD_SOFT
    return UNKNOWN


def network_retry_wait(decline: Decline | dict | None) -> timedelta | None:
    """How long after this failed attempt the network allows the next one (Mastercard advice codes 24-30; Stripe's
    24-hour block after too many declines), or None when it sets no wait. A retry dunctl makes sooner is refused
    by the network and counts against the merchant (Mastercard's excessive-retry program)."""
    if decline is None:
        return None
    if isinstance(decline, Decline):
        decline = asdict(decline)
    waits = [NETWORK_RETRY_WAITS.get(decline.get("network_advice_code") or "")]
    waits += [CODE_RETRY_WAITS.get(decline.get(name) or "") for name in ("code", "decline_code", "failure_code")]
    found = [w for w in waits if w is not None]
    return max(found) if found else None


def retry_wait_reason(decline: Decline | dict | None) -> str | None:
    """Why the network holds the next retry, in words for `case show` ('Mastercard advice 27: retry after 4
    days'), or None when it does not."""
    wait = network_retry_wait(decline)
    if wait is None:
        return None
    if isinstance(decline, Decline):
        decline = asdict(decline)
    advice = decline.get("network_advice_code")
    span = f"{wait.days} day{'s' if wait.days != 1 else ''}" if wait.days else \
        f"{wait.seconds // 3600} hour{'s' if wait.seconds // 3600 != 1 else ''}"
    if advice in NETWORK_RETRY_WAITS and NETWORK_RETRY_WAITS[advice] == wait:
        return f"Mastercard advice {advice}: retry after {span}"
    return f"the card is blocked after too many declines: retry after {span}"


CARD_CODES = _CARD_DECLINE_CODES


def all_known_codes() -> dict[str, str]:
    """Every code this table knows, for `dunctl check` and the docs (a code in both tables: its card type)."""
    return {**BANK_RETURN_CODES, **_CARD_DECLINE_CODES}


DATA = Path(__file__).with_name("data")
PUBLISHED_LISTS = ("stripe_decline_codes.txt", "stripe_payment_error_codes.txt", "bank_return_codes.txt")


def published_codes(name: str) -> list[str]:
    """The codes of one of Stripe's published lists kept in dunctl/data (comments and blank lines skipped)."""
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
