import pytest

from dunctl.failures import FAILURE_TYPES, Decline, all_known_codes, classify

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
