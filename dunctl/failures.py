"""Failure classification: every Stripe decline code, advice code and bank return code maps to a failure type.

This module is data first. The sequences decide what to do about each type (see DESIGN.md, "Failure types");
this table only says which type a failure is.
"""

from __future__ import annotations

from dataclasses import dataclass

CARD_HARD = "card_hard"
CARD_UPDATE = "card_update"
ACTION_REQUIRED = "action_required"
CARD_SOFT = "card_soft"
BANK_SOFT = "bank_soft"
BANK_HARD = "bank_hard"
DISPUTE = "dispute"
UNKNOWN = "unknown"

FAILURE_TYPES = (CARD_HARD, CARD_UPDATE, ACTION_REQUIRED, CARD_SOFT, BANK_SOFT, BANK_HARD, DISPUTE, UNKNOWN)

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
}

_CARD_DECLINE_CODES: dict[str, str] = {}


def _codes(failure_type: str, codes: str) -> None:
    for code in codes.split():
        _CARD_DECLINE_CODES[code] = failure_type


_codes(CARD_HARD, """
    lost_card stolen_card pickup_card fraudulent merchant_blacklist restricted_card security_violation
    revocation_of_authorization revocation_of_all_authorizations stop_payment_order transaction_not_allowed
    not_permitted service_not_allowed invalid_account do_not_try_again
""")
_codes(CARD_UPDATE, """
    expired_card incorrect_number invalid_number incorrect_cvc invalid_cvc invalid_expiry_month
    invalid_expiry_year incorrect_zip card_not_supported currency_not_supported
    new_account_information_available incorrect_pin invalid_pin pin_try_exceeded offline_pin_required
    online_or_offline_pin_required
""")
_codes(ACTION_REQUIRED, "authentication_required")
_codes(CARD_SOFT, """
    insufficient_funds card_velocity_exceeded withdrawal_count_limit_exceeded processing_error
    issuer_not_available try_again_later reenter_transaction approve_with_id generic_decline do_not_honor
    call_issuer no_action_taken duplicate_transaction invalid_amount testmode_decline card_declined
""")

# Bank debits (ACH and SEPA): Stripe's charge failure_code, the NACHA return code, and the SEPA reason code.
BANK_RETURN_CODES: dict[str, str] = {}


def _bank(failure_type: str, codes: str) -> None:
    for code in codes.split():
        BANK_RETURN_CODES[code] = failure_type


_bank(BANK_SOFT, "insufficient_funds R01 R09 AM04 MS02 MS03 generic_could_not_process could_not_process")
_bank(BANK_HARD, """
    account_closed bank_account_closed R02 no_account invalid_account_number bank_account_invalid_details R03 R04
    debit_not_authorized R05 R07 R08 R10 R11 R29 R31 account_frozen bank_account_frozen R16
    bank_account_restricted R20 recipient_deceased R15 bank_ownership_changed invalid_currency
    AC01 AC04 AC06 MD01 MD07 AG01 RR01 RR02 RR03 RR04 SL01 BE05
""")

ADVICE_CODES = {
    "do_not_try_again": CARD_HARD,
    "confirm_card_data": CARD_UPDATE,
    "try_again_later": CARD_SOFT,
}
# Mastercard Merchant Advice Codes: 03 and 21 forbid any retry; 01 asks for updated card data.
NETWORK_ADVICE_CODES = {"03": CARD_HARD, "21": CARD_HARD, "01": CARD_UPDATE, "02": CARD_SOFT}
OUTCOME_REASONS = {"previously_declined_do_not_retry": CARD_HARD}

BANK_METHOD_TYPES = frozenset({"us_bank_account", "sepa_debit", "bacs_debit", "acss_debit", "au_becs_debit",
                               "ach_debit"})


@dataclass(frozen=True)
class Decline:
    """What Stripe said about one failed attempt, as raw codes."""

    code: str | None = None              # last_payment_error.code ('card_declined', 'expired_card', ...)
    decline_code: str | None = None      # last_payment_error.decline_code
    advice_code: str | None = None       # last_payment_error.advice_code
    network_decline_code: str | None = None
    network_advice_code: str | None = None
    failure_code: str | None = None      # charge.failure_code (bank debits) or return code
    outcome_reason: str | None = None    # charge.outcome.reason
    payment_intent_status: str | None = None
    payment_method_type: str | None = None
    message: str | None = None

    @property
    def shown_code(self) -> str | None:
        """The most specific code, for people to read."""
        return self.decline_code or self.failure_code or self.code or self.network_advice_code


def shown_code(decline: dict | None) -> str | None:
    """The most specific code of a decline stored as JSON in the ledger (see Decline.shown_code)."""
    if not decline:
        return None
    return decline.get("decline_code") or decline.get("failure_code") or decline.get("code") \
        or decline.get("network_advice_code")


def classify(decline: Decline) -> str:
    """The failure type of one failed attempt. Signals that forbid retrying win over everything else."""
    for table, value in ((ADVICE_CODES, decline.advice_code),
                         (NETWORK_ADVICE_CODES, decline.network_advice_code),
                         (OUTCOME_REASONS, decline.outcome_reason)):
        if value in table and table[value] in (CARD_HARD, CARD_UPDATE):
            return table[value]
    is_bank = decline.payment_method_type in BANK_METHOD_TYPES
    if is_bank or (decline.failure_code and decline.failure_code in BANK_RETURN_CODES
                   and decline.failure_code not in _CARD_DECLINE_CODES):
        for value in (decline.failure_code, decline.decline_code, decline.code):
            if value in BANK_RETURN_CODES:
                return BANK_RETURN_CODES[value]
        if is_bank:
            return UNKNOWN
    for value in (decline.decline_code, decline.code, decline.failure_code):
        if value in _CARD_DECLINE_CODES and value != "card_declined":
            return _CARD_DECLINE_CODES[value]
    if decline.payment_intent_status == "requires_action":
        return ACTION_REQUIRED
    if decline.advice_code in ADVICE_CODES:
        return ADVICE_CODES[decline.advice_code]
    # A bare card_declined with no decline code is Stripe's generic decline; an unrecognised decline code stays
    # unknown so that it is shown raw and capped tighter.
    if decline.decline_code is None and "card_declined" in (decline.code, decline.failure_code):
        return CARD_SOFT
    return UNKNOWN


def all_known_codes() -> dict[str, str]:
    """Every code this table knows, for `dunctl check` and the docs."""
    return {**_CARD_DECLINE_CODES, **BANK_RETURN_CODES}
