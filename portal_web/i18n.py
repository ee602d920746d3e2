"""The customer's words, from the gettext catalogue, and how a language is chosen.

Every text a customer reads (the splash page, the portal API's messages, the core's refusals and
M-Pesa's results) is an English message id with its Kiswahili in
``portal_web/translations/sw/LC_MESSAGES/messages.po`` (compiled beside it to ``messages.mo``;
``tests/portal_web/test_i18n.py`` fails when a message lacks its Kiswahili or the ``.mo`` is stale). Update
the catalogue with ``pybabel extract -F babel.cfg -k N_ -k t -o portal_web/translations/messages.pot .``,
``pybabel update -i portal_web/translations/messages.pot -d portal_web/translations`` and
``pybabel compile -d portal_web/translations``.

Templates say ``_("...")`` (Flask-Babel, whose locale is :func:`lang`); Python code says
``t("...", language)``, which needs no request (the status poll's fast lane has none). The core
names what went wrong by a code (:class:`hotspotd.errors.DomainError`, Daraja's reason words);
:data:`REFUSALS` and :data:`PAYMENT_RESULTS` are the one table of their words.

The language comes from ``?lang=`` (remembered in a cookie), else the browser's Accept-Language,
else English.
"""
from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

from babel.support import NullTranslations, Translations
from flask import request
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

LANGS = ("en", "sw")
TRANSLATIONS = Path(__file__).parent / "translations"


def N_(message: str) -> str:
    """Marks a message for the catalogue where it is defined; it is translated where it is shown."""
    return message


UNEXPECTED = N_("Something went wrong on our side; please try again.")
TOO_MANY_REQUESTS = N_("Too many requests; wait a minute and try again.")

#: a refusal's code (hotspotd.errors.DomainError: payments, access, vouchers, phone numbers,
#: ``mpesa_<reason>`` for a failed STK push) → what the customer reads
REFUSALS: dict[str, str] = {
    "unknown_site": N_("This Wi-Fi's sign-in page is not set up correctly (unknown venue). Please tell the staff."),
    "cannot_record": N_("This Wi-Fi cannot take payments right now. Please tell the staff."),
    "storage_busy": N_("The payment system is busy. Please try again in a moment."),
    "bad_mac": N_("The device address (MAC) is not valid; reconnect to the Wi-Fi and try again."),
    "mac_missing": N_("Send the device's macAddress (AA:BB:CC:DD:EE:FF)."),
    "choose_package": N_("Choose a package."),
    "package_not_on_offer": N_("That package is not on offer; choose another."),
    "amount_out_of_range": N_("This package cannot be paid with M-Pesa (amount out of range)."),
    "phone_missing": N_("Enter your M-Pesa phone number, e.g. 0712 345 678."),
    "phone_not_digits": N_("A phone number has only digits, e.g. 0712 345 678."),
    "phone_unreadable": N_("That is not a phone number; use the form 0712 345 678."),
    "phone_not_kenyan": N_("Use a Kenyan Safaricom number, e.g. 0712 345 678."),
    "phone_not_mobile": N_("Use a Safaricom mobile number, e.g. 0712 345 678."),
    "phone_not_safaricom": N_("M-Pesa prompts go only to Safaricom numbers; use your Safaricom line."),
    "mpesa_unavailable": N_("M-Pesa is not answering right now, please try again in a minute."),
    "mpesa_misconfigured": N_("M-Pesa payments are not set up correctly here. Please tell the staff."),
    "mpesa_rejected": N_("M-Pesa could not take this payment request. Please try again."),
    "mpesa_phone": N_("That number cannot receive M-Pesa prompts. Use a Safaricom number such as 0712 345 678."),
    "mpesa_amount": N_("M-Pesa cannot take that amount."),
    "mpesa_locked": N_("Another M-Pesa payment is waiting on your phone. Finish or cancel it there, or wait a "
                       "minute, then try again."),
    # a rate limit (spike arrest, quota): the words of a busy M-Pesa
    "mpesa_busy": N_("M-Pesa is busy right now. Please try again in a minute."),
    "receipt_not_found": N_("We found no payment with that M-Pesa code from that phone number. Check the code in "
                            "the M-Pesa SMS and the number you paid with."),
    "time_used_up": N_("The time bought with this payment has run out."),
    "data_used_up": N_("The data bought with this payment has been used up."),
    "other_venue": N_("This time was bought at another of our venues and works only there."),
    "no_device": N_("This page cannot tell which device you are using. Stay on this Wi-Fi and open any website: "
                    "the Wi-Fi's login page opens, and there it works. Nothing was used up."),
    "not_a_voucher": N_("That is not a voucher code. It looks like ABCDE-23456."),
    "voucher_invalid": N_("This voucher code is not valid. Check it and try again."),
    "voucher_used": N_("This voucher has already been used."),
    "voucher_other_venue": N_("This voucher is for another of our venues and works only there."),
}

#: what the customer reads when M-Pesa's Transaction Status does not confirm a code (hotspotd.lookups)
LOOKUP_REFUSALS = {
    "not_found": N_("M-Pesa has no completed payment with that code. Check the code in the M-Pesa SMS."),
    "not_ours": N_("That payment went to another business, not to this Wi-Fi."),
    "wrong_phone": N_("That payment was not made from the number you typed. Type the number you paid with."),
    "no_package": N_("That amount is not the price of a package here. Please tell the staff."),
    "claimed": N_("That M-Pesa code has already been used."),
    "unavailable": N_("M-Pesa did not answer in time. Please try again in a minute."),
}
#: a payment's reason word (hotspotd.daraja.codes.REASONS, or the result_desc hotspotd stored for a
#: payment that ended without M-Pesa's word: hotspotd.payments.UNSENT, NO_ANSWER, mpesa_<reason>)
#: → what the customer reads about it
PAYMENT_RESULTS: dict[str, str] = {
    "paid": N_("Payment received. Thank you!"),
    "insufficient_funds": N_("Not enough M-Pesa balance. Top up and try again."),
    "busy": N_("M-Pesa is busy right now. Please try again in a minute."),
    "rule_limited": N_("M-Pesa refuses the same amount twice within 2 minutes. Wait 2 minutes, or choose another "
                       "package."),
    "expired": N_("The M-Pesa prompt expired. Please try again."),
    "push_failed": N_("We could not send the M-Pesa prompt to your phone. Please try again."),
    "cancelled": N_("You cancelled the M-Pesa prompt."),
    "no_response": N_("No response from your phone. Keep it on and unlocked, then try again."),
    "wrong_pin": N_("Wrong M-Pesa PIN. Please try again."),
    "pending": N_("Waiting for you to confirm on your phone."),
    "misconfigured": N_("M-Pesa payments are not set up correctly here. Please tell the staff."),
    "failed": N_("The M-Pesa payment did not go through. Please try again."),
    "unsent": N_("We could not confirm the M-Pesa prompt. If you paid, your time starts when M-Pesa confirms it."),
    "no_answer": N_("No answer from M-Pesa in time."),
}


@cache
def translations(language: str) -> NullTranslations:
    """The compiled catalogue of ``language`` (English: the message ids themselves)."""
    if language == "en" or language not in LANGS:
        return NullTranslations()
    return Translations.load(str(TRANSLATIONS), [language], domain="messages")


def t(message: str, language: str, **values) -> str:
    """``message`` (an English message id) in ``language``, its ``%(name)s`` placeholders filled."""
    text = translations(language).gettext(message)
    return text % values if values else text


def refusal(exc, language: str) -> str:
    """What the customer reads about a refusal of the core (a DomainError), by its code."""
    message = REFUSALS.get(exc.code) or (PAYMENT_RESULTS["failed"] if exc.code.startswith("mpesa_") else UNEXPECTED)
    return t(message, language, **exc.values)


def payment_result(reason: str, language: str) -> str:
    """What the customer reads about a payment's reason word (``failed``'s words for an unknown one)."""
    if reason.startswith("mpesa_") and reason in REFUSALS:
        return t(REFUSALS[reason], language)
    return t(PAYMENT_RESULTS.get(reason, PAYMENT_RESULTS["failed"]), language)


def lang() -> str:
    """The page's language for this request."""
    chosen = request.args.get("lang") or request.form.get("lang") or request.cookies.get("lang")
    if chosen in LANGS:
        return chosen
    return accepted(request.headers.get("Accept-Language")) or "en"


def accepted(header: str | None) -> str | None:
    """The best of :data:`LANGS` for an Accept-Language header, None when it names neither: what
    ``request.accept_languages.best_match(LANGS)`` says. Parsing the header took 15-35 µs, on
    every status poll and splash page; a phone sends the same header each time, so each distinct
    one is parsed once (the answer depends on the header alone). Only headers of a browser's
    length are kept: the cache stays small whatever a client sends."""
    if header is not None and len(header) > 200:
        return _best_language(header)
    return _best_language_cached(header)


def _best_language(header: str | None) -> str | None:
    return parse_accept_header(header, LanguageAccept).best_match(LANGS)


_best_language_cached = lru_cache(maxsize=1024)(_best_language)


#: what the M-Pesa prompt will show, said before and while it comes (hotspotd.config.Payee): a
#: customer who reads the same name and number on the prompt knows it is this Wi-Fi's
PAYEE_BEFORE = {
    ("paybill", True): N_("The M-Pesa prompt will ask you to pay %(name)s, paybill %(number)s, account %(account)s."),
    ("paybill", False): N_("The M-Pesa prompt will ask you to pay paybill %(number)s, account %(account)s."),
    ("till", True): N_("The M-Pesa prompt will ask you to pay %(name)s, till number %(number)s."),
    ("till", False): N_("The M-Pesa prompt will ask you to pay till number %(number)s."),
}
PAYEE_DURING = {
    ("paybill", True): N_("The M-Pesa prompt asks you to pay %(amount)s to %(name)s (paybill %(number)s, "
                          "account %(account)s)."),
    ("paybill", False): N_("The M-Pesa prompt asks you to pay %(amount)s to paybill %(number)s, account %(account)s."),
    ("till", True): N_("The M-Pesa prompt asks you to pay %(amount)s to %(name)s (till number %(number)s)."),
    ("till", False): N_("The M-Pesa prompt asks you to pay %(amount)s to till number %(number)s."),
}


def payee(payee, language: str, amount: str | None = None) -> str:
    """The sentence naming whom the prompt pays (``amount``: while it comes, the money too)."""
    table = PAYEE_BEFORE if amount is None else PAYEE_DURING
    return t(table[(payee.kind, bool(payee.business_name))], language, name=payee.business_name,
             number=payee.number, account=payee.account_reference, amount=amount or "")
