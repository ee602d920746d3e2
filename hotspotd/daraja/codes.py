"""Daraja result codes: what each one means for a payment, and the reason word the customer is told.

A ResultCode arrives as a number in callbacks and as a string from the STK query; some codes are
not numeric at all (``SFC_IC0003``). Everything here takes either form and works on text.
The table follows shared/reference/daraja.md, "Result codes"; any other non-zero code is a failure.
"""
from __future__ import annotations

#: Result code (as text) → outcome: success | failed | cancelled | timeout | pending.
OUTCOMES: dict[str, str] = {
    "0": "success",
    "1": "failed",            # insufficient balance
    "17": "failed",           # "Rule limited": the same amount, customer and shortcode within ~2 minutes
    "26": "failed",           # system busy
    "1001": "failed",         # subscriber locked: another transaction in progress
    "1019": "timeout",        # transaction expired
    "1025": "failed",         # error sending the push
    "1032": "cancelled",      # cancelled by the user
    "1036": "timeout",        # SMSC ACK timeout
    "1037": "timeout",        # no response from the user / phone unreachable
    "2001": "failed",         # wrong PIN (initiator information invalid)
    "4999": "pending",        # still processing (query only)
    "9999": "failed",         # error sending the push
    "SFC_IC0003": "failed",   # operator does not exist: till/paybill misconfigured
}

#: Result code → a short machine word for the portal and the logs (the portal's catalogue says it
#: in words: portal_web/i18n.py, PAYMENT_RESULTS).
REASONS: dict[str, str] = {
    "0": "paid",
    "1": "insufficient_funds",
    "17": "rule_limited",
    "26": "busy",
    "1001": "busy",
    "1019": "expired",
    "1025": "push_failed",
    "1032": "cancelled",
    "1036": "no_response",
    "1037": "no_response",
    "2001": "wrong_pin",
    "4999": "pending",
    "9999": "push_failed",
    "SFC_IC0003": "misconfigured",
}

def normalize(code: str | int | None) -> str:
    """The code as text: ``1032``, ``"1032"`` and ``" 1032 "`` all give ``"1032"``; None gives ``""``."""
    if code is None:
        return ""
    text = str(code).strip().upper()
    return str(int(text)) if text.isascii() and text.isdigit() else text


def outcome(code: str | int | None) -> str:
    """``success``, ``failed``, ``cancelled``, ``timeout`` or ``pending`` for ``code``.

    No code at all (None or blank) means no answer yet: ``pending``. Unknown codes are ``failed``.
    """
    text = normalize(code)
    if not text:
        return "pending"
    return OUTCOMES.get(text, "failed")


def reason(code: str | int | None) -> str:
    """A short machine word for ``code``: ``cancelled``, ``insufficient_funds``, ``wrong_pin``, ..."""
    text = normalize(code)
    if not text:
        return "pending"
    return REASONS.get(text, "failed")

#: Daraja refuses the same amount from the same customer to the same shortcode again within about
#: this many seconds (ResultCode 17, "Rule limited"; daraja.md, "More result and error codes")
RULE_LIMIT_SECONDS = 120
