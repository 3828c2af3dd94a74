from datetime import timedelta

import pytest

from dunctl.failures import (BANK_RETURN_CODES, CARD_CODES, FAILURE_TYPES, NEVER_RETRY, PUBLISHED_LISTS, Decline,
                             all_known_codes, classify, described_code, network_retry_wait, published_codes,
                             retry_wait_reason)

CASES = [
    (Decline(code="card_declined", decline_code="insufficient_funds"), "card_soft"),
    (Decline(code="card_declined", decline_code="do_not_honor"), "card_soft"),
    (Decline(code="card_declined"), "card_soft"),
    (Decline(code="card_declined", decline_code="stolen_card"), "card_hard"),
    (Decline(code="card_declined", decline_code="fraudulent"), "card_hard"),
    (Decline(code="expired_card"), "card_update"),
    (Decline(code="incorrect_cvc"), "card_update"),
    (Decline(code="card_declined", decline_code="generic_decline", advice_code="do_not_try_again"), "card_hard"),
    (Decline(code="card_declined", decline_code="insufficient_funds", advice_code="confirm_card_data"),
     "card_update"),
    (Decline(code="card_declined", decline_code="do_not_honor", network_advice_code="03"), "card_hard"),
    (Decline(code="card_declined", decline_code="do_not_honor", network_advice_code="21"), "card_hard"),
    (Decline(code="card_declined", decline_code="generic_decline",
             outcome_reason="previously_declined_do_not_retry"), "card_hard"),
    (Decline(code="authentication_required", decline_code="authentication_required"), "action_required"),
    (Decline(code="payment_intent_authentication_failure", payment_intent_status="requires_action"),
     "action_required"),
    (Decline(failure_code="insufficient_funds", payment_method_type="us_bank_account"), "bank_soft"),
    (Decline(failure_code="R01", payment_method_type="us_bank_account"), "bank_soft"),
    (Decline(failure_code="account_closed", payment_method_type="us_bank_account"), "bank_hard"),
    (Decline(failure_code="R02"), "bank_hard"),
    (Decline(failure_code="debit_not_authorized", payment_method_type="us_bank_account"), "bank_hard"),
    (Decline(failure_code="AC04", payment_method_type="sepa_debit"), "bank_hard"),
    (Decline(failure_code="MD01", payment_method_type="sepa_debit"), "bank_hard"),
    (Decline(code="card_declined", decline_code="something_new"), "unknown"),
    (Decline(), "unknown"),
]


@pytest.mark.parametrize("decline, expected", CASES)
def test_classification(decline, expected):
    assert classify(decline) == expected


def test_every_code_in_the_design_table_is_known():
    design = """lost_card stolen_card pickup_card fraudulent merchant_blacklist restricted_card security_violation
    revocation_of_authorization revocation_of_all_authorizations stop_payment_order transaction_not_allowed
    not_permitted service_not_allowed invalid_account do_not_try_again expired_card incorrect_number
    invalid_number incorrect_cvc invalid_cvc invalid_expiry_month invalid_expiry_year incorrect_zip
    card_not_supported currency_not_supported new_account_information_available authentication_required
    insufficient_funds card_velocity_exceeded withdrawal_count_limit_exceeded processing_error
    issuer_not_available try_again_later reenter_transaction approve_with_id generic_decline do_not_honor
    call_issuer no_action_taken R01 R09 R02 R03 R04 R05 R07 R08 R10 R11 R29 R31 R16 R20 R15
    AC04 AC01 AC06 MD01 MD07""".split()
    known = all_known_codes()
    assert [code for code in design if code not in known] == []
    assert set(known.values()) <= set(FAILURE_TYPES)


# -- every code Stripe publishes has a failure type --------------------------------------------------------------


@pytest.mark.parametrize("name", PUBLISHED_LISTS)
def test_every_code_of_stripes_published_lists_is_mapped(name):
    codes = published_codes(name)
    assert len(codes) > 20, f"{name} lost its codes"
    table = BANK_RETURN_CODES if name == "bank_return_codes.txt" else {**BANK_RETURN_CODES, **CARD_CODES}
    assert [code for code in codes if code not in table] == [], f"codes in dunctl/data/{name} with no failure type"


ISSUE_10 = [
    # cards
    (Decline(code="expired_payment_method"), "card_update"),
    (Decline(code="incorrect_postal_code"), "card_update"),
    (Decline(code="authentication_failure"), "action_required"),
    (Decline(code="payment_intent_authentication_failure"), "action_required"),
    (Decline(code="authentication_not_handled"), "action_required"),
    (Decline(code="card_decline_rate_limit_exceeded"), "card_soft"),
    (Decline(code="payment_method_restricted"), "card_hard"),
    # bank debits
    (Decline(code="bank_account_unusable", payment_method_type="us_bank_account"), "bank_hard"),
    (Decline(code="bank_account_declined", payment_method_type="us_bank_account"), "bank_hard"),
    (Decline(code="payment_intent_mandate_invalid", payment_method_type="sepa_debit"), "bank_hard"),
    (Decline(code="sepa_unsupported_account", payment_method_type="sepa_debit"), "bank_hard"),
    (Decline(code="payment_method_provider_decline", payment_method_type="sepa_debit"), "bank_hard"),
    (Decline(code="bank_account_unusable"), "bank_hard"),
    # never retried
    (Decline(code="card_declined", decline_code="duplicate_transaction"), "card_hard"),
    (Decline(code="card_declined", decline_code="invalid_amount"), "card_hard"),
    (Decline(code="card_declined", decline_code="testmode_decline"), "card_hard"),
    # SEPA MS02 is the customer refusing: not soft, whatever the normalised code says
    (Decline(failure_code="MS02", payment_method_type="sepa_debit"), "bank_hard"),
    (Decline(code="payment_intent_payment_attempt_failed", failure_code="generic_could_not_process",
             network_decline_code="MS02", payment_method_type="sepa_debit"), "bank_hard"),
    (Decline(failure_code="MS03", payment_method_type="sepa_debit"), "bank_soft"),
    # normalised first, the raw code where the normalised one says nothing
    (Decline(code="payment_intent_payment_attempt_failed", failure_code="insufficient_funds",
             network_decline_code="R01", payment_method_type="us_bank_account"), "bank_soft"),
    (Decline(code="payment_intent_payment_attempt_failed", failure_code="no_account",
             network_decline_code="R03", payment_method_type="us_bank_account"), "bank_hard"),
    (Decline(code="payment_intent_payment_attempt_failed", network_decline_code="R01",
             payment_method_type="us_bank_account"), "bank_soft"),
    (Decline(code="payment_intent_payment_attempt_failed", network_decline_code="R02"), "bank_hard"),
    # Mastercard advice codes
    (Decline(code="card_declined", decline_code="insufficient_funds", network_advice_code="04"), "card_update"),
    (Decline(code="card_declined", decline_code="insufficient_funds", network_advice_code="25"), "card_soft"),
    (Decline(code="card_declined", network_advice_code="27"), "card_soft"),
]


@pytest.mark.parametrize("decline, expected", ISSUE_10)
def test_codes_stripe_documents_for_this_api_version(decline, expected):
    assert classify(decline) == expected


def test_never_retried_codes_are_of_a_type_that_forbids_retrying():
    for code in ("duplicate_transaction", "invalid_amount", "testmode_decline"):
        assert classify(Decline(code="card_declined", decline_code=code)) in NEVER_RETRY


def test_the_shown_code_is_the_normalised_one_and_the_raw_one_is_shown_beside_it():
    bank = Decline(code="payment_intent_payment_attempt_failed", failure_code="insufficient_funds",
                   network_decline_code="R01", payment_method_type="us_bank_account")
    assert bank.shown_code == "insufficient_funds"
    assert bank.described_code == "insufficient_funds (R01)"
    assert described_code({"code": "card_declined", "decline_code": "do_not_honor",
                           "network_decline_code": "05"}) == "do_not_honor (05)"
    assert Decline(code="card_declined").shown_code == "card_declined"
    assert Decline(code="payment_intent_payment_attempt_failed", network_decline_code="R02").shown_code \
        == "payment_intent_payment_attempt_failed"


HOUR, DAY = timedelta(hours=1), timedelta(days=1)
WAITS = [
    ({"network_advice_code": "24"}, HOUR),
    ({"network_advice_code": "25"}, 24 * HOUR),
    ({"network_advice_code": "26"}, 2 * DAY),
    ({"network_advice_code": "27"}, 4 * DAY),
    ({"network_advice_code": "28"}, 6 * DAY),
    ({"network_advice_code": "29"}, 8 * DAY),
    ({"network_advice_code": "30"}, 10 * DAY),
    ({"network_advice_code": "02"}, None),
    ({"network_advice_code": "03"}, None),        # never: the failure type forbids any retry
    ({"network_advice_code": "04"}, None),        # only after new card details (card_update)
    ({"code": "card_decline_rate_limit_exceeded"}, 24 * HOUR),
    ({"code": "card_declined", "decline_code": "insufficient_funds"}, None),
    ({"code": "card_decline_rate_limit_exceeded", "network_advice_code": "26"}, 2 * DAY),
    ({}, None),
]


@pytest.mark.parametrize("fields, wait", WAITS)
def test_the_network_sets_the_earliest_retry(fields, wait):
    assert network_retry_wait(Decline(**fields)) == wait
    assert network_retry_wait(fields) == wait          # a decline stored as JSON in the ledger


@pytest.mark.parametrize("fields, reason", [
    ({"network_advice_code": "27"}, "Mastercard advice 27: retry after 4 days"),
    ({"network_advice_code": "24"}, "Mastercard advice 24: retry after 1 hour"),
    ({"network_advice_code": "25"}, "Mastercard advice 25: retry after 1 day"),
    ({"code": "card_decline_rate_limit_exceeded"}, "the card is blocked after too many declines: retry after 1 day"),
    ({"code": "card_declined", "decline_code": "insufficient_funds"}, None),
])
def test_the_reason_a_retry_waits_reads_as_words(fields, reason):
    assert retry_wait_reason(fields) == reason


# Endive codes that were still `unknown` (issue #21): mandate, bank verification, provider, 3D Secure.
ENDIVE_STILL_UNKNOWN = [
    ("billing_invalid_mandate", "sepa_debit", "bank_hard"),
    ("setup_intent_mandate_invalid", "us_bank_account", "bank_hard"),
    ("bank_account_unverified", "us_bank_account", "bank_hard"),
    ("bank_account_verification_failed", "us_bank_account", "bank_hard"),
    ("bank_account_bad_routing_numbers", "us_bank_account", "bank_hard"),
    ("payment_method_microdeposit_failed", "us_bank_account", "bank_hard"),
    ("payment_method_microdeposit_verification_attempts_exceeded", "us_bank_account", "bank_hard"),
    ("payment_method_microdeposit_verification_timeout", "us_bank_account", "bank_hard"),
    ("payment_method_unactivated", "us_bank_account", "bank_hard"),
    ("india_recurring_payment_mandate_canceled", "card", "card_update"),
    ("three_d_secure_authentication_not_supported", "card", "card_update"),
    ("invalid_card_type", "card", "card_update"),
    ("payment_method_currency_mismatch", "card", "card_update"),
    ("token_card_network_invalid", "card", "card_update"),
    ("three_d_secure_authentication_upstream_error", "card", "action_required"),
    ("setup_intent_authentication_failure", "card", "action_required"),
    ("payment_intent_action_required", "card", "action_required"),
    ("payment_method_customer_decline", "card", "action_required"),
    ("acss_debit_session_incomplete", None, "action_required"),
    ("payment_method_provider_timeout", "card", "card_soft"),
    ("payment_method_not_available", "card", "card_soft"),
    ("charge_exceeds_source_limit", "card", "card_soft"),
]


@pytest.mark.parametrize("code, method_type, expected", ENDIVE_STILL_UNKNOWN)
def test_endive_codes_that_were_unknown_have_a_failure_type(code, method_type, expected):
    assert classify(Decline(code=code, payment_method_type=method_type)) == expected
    assert code in published_codes("stripe_payment_error_codes.txt")


def test_the_newly_classified_codes_are_ones_stripe_python_documents():
    import inspect

    from stripe._payment_intent import PaymentIntent

    documented = inspect.getsource(PaymentIntent.LastPaymentError)
    assert [code for code, _, _ in ENDIVE_STILL_UNKNOWN if f'"{code}"' not in documented] == []
