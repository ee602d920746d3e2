"""Result codes → outcome, reason word and customer text (shared/reference/daraja.md, "Result codes")."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from hotspotd.daraja import codes
from portal_web import i18n


def customer_message(code, lang="en"):
    """What the customer reads about ``code``: the core's reason word, in the portal's catalogue."""
    return i18n.payment_result(codes.reason(code), lang)


EXPECTED = {
    "0": "success", "1": "failed", "17": "failed", "26": "failed", "1001": "failed", "1019": "timeout",
    "1025": "failed", "9999": "failed", "1032": "cancelled", "1036": "timeout", "1037": "timeout",
    "2001": "failed", "4999": "pending", "SFC_IC0003": "failed",
}
OUTCOMES = {"success", "failed", "cancelled", "timeout", "pending"}
REASONS = {"cancelled", "insufficient_funds", "wrong_pin", "no_response", "expired", "busy", "push_failed",
           "misconfigured", "paid", "pending", "failed"}


def test_table_is_the_reference():
    assert codes.OUTCOMES == EXPECTED


@pytest.mark.parametrize("code", [1032, "1032", " 1032 ", "1032\n"])
def test_outcome_accepts_number_or_text(code):
    assert codes.outcome(code) == "cancelled"


@pytest.mark.parametrize("code,expected", [(0, "success"), ("0", "success"), (1037, "timeout"),
                                           ("sfc_ic0003", "failed"), ("4999", "pending")])
def test_outcome_of_known_codes(code, expected):
    assert codes.outcome(code) == expected


@pytest.mark.parametrize("code", [3, "1234", "SFC_IC9999", "-1", "abc"])
def test_unknown_codes_fail(code):
    assert codes.outcome(code) == "failed"
    assert codes.reason(code) == "failed"


def test_no_code_is_no_answer_yet():
    assert codes.outcome(None) == "pending"
    assert codes.outcome("  ") == "pending"


@pytest.mark.parametrize("code,word", [(1032, "cancelled"), (1, "insufficient_funds"), (2001, "wrong_pin"),
                                       (1037, "no_response"), (1036, "no_response"), (1019, "expired"),
                                       (26, "busy"), (1001, "busy"), (1025, "push_failed"), (9999, "push_failed"),
                                       ("SFC_IC0003", "misconfigured"), (0, "paid"), ("4999", "pending")])
def test_reason_words(code, word):
    assert codes.reason(code) == word


def test_customer_messages_in_both_languages():
    assert customer_message(1032) == "You cancelled the M-Pesa prompt."
    assert customer_message("1032", "sw") == "Ulighairi ombi la M-Pesa."
    assert "balance" in customer_message(1).lower()
    assert "salio" in customer_message(1, "sw").lower()
    assert "PIN" in customer_message(2001) and "PIN" in customer_message(2001, "sw")
    assert "phone" in customer_message(1037).lower()
    assert "received" in customer_message(0).lower()
    assert customer_message("whatever") == customer_message(17_000)
    assert customer_message(1032, "fr") == customer_message(1032, "en")


def test_every_reason_has_both_texts():
    for code in list(EXPECTED) + ["unknown"]:
        for lang in ("en", "sw"):
            text = customer_message(code, lang)
            assert text and len(text) < 120


@given(st.one_of(st.none(), st.integers(), st.text(max_size=20)))
def test_any_code_gives_a_known_outcome_and_reason(code):
    assert codes.outcome(code) in OUTCOMES
    assert codes.reason(code) in REASONS
    assert customer_message(code, "sw")


def test_rule_17_says_wait_or_choose_another_package():
    # ResultCode 17 is Daraja's "Rule limited": the same amount, customer and shortcode within about
    # 2 minutes (shared/reference/daraja.md) -- trying the same package again at once fails again
    assert codes.REASONS["17"] == "rule_limited" and codes.OUTCOMES["17"] == "failed"
    assert "choose another package" in i18n.payment_result("rule_limited", "en")
    assert "chagua kifurushi kingine" in i18n.payment_result("rule_limited", "sw")
