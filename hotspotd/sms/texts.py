"""The words of hotspotd's SMS, as gettext message ids (their Kiswahili is in the portal's
catalogue beside every other text a customer reads). ``compose`` takes the translator from the
composition root (``portal_web.i18n.t``): the core reads no catalogue itself.

Each fits one SMS where the names allow (160 GSM characters): a customer on a basic phone reads
the first part first.
"""
from __future__ import annotations

from typing import Callable

from .. import clock, formatting

Translate = Callable[..., str]


def N_(message: str) -> str:
    """Marks a message for the catalogue (``pybabel extract -k N_``)."""
    return message


RECEIPT = N_("%(site)s: paid %(amount)s, M-Pesa %(receipt)s. Your %(package)s of Wi-Fi ends at %(ends)s. "
             "Time left, more time: %(me)s")
RECEIPT_NO_CODE = N_("%(site)s: paid %(amount)s. Your %(package)s of Wi-Fi ends at %(ends)s. "
                     "Time left, more time: %(me)s")
RECEIPT_DATA = N_("%(site)s: paid %(amount)s, M-Pesa %(receipt)s. Your %(package)s of Wi-Fi is ready. "
                  "Time and data left: %(me)s")
REMINDER = N_("%(site)s: your Wi-Fi time ends at %(ends)s, in %(minutes)s minutes. Buy more time: %(me)s")
VOUCHER = N_("%(site)s: your Wi-Fi voucher for %(package)s is %(code)s. Join the Wi-Fi, open any website, "
             "tap \"Have a voucher?\" and enter it.")


def hhmm(ts: float) -> str:
    """``21:37``, Nairobi time."""
    return clock.local(ts).strftime("%H:%M")


def receipt(t: Translate, lang: str, *, site: str, amount: int, receipt: str | None, package, ends_at: float,
            data_cap: int | None, me: str) -> str:
    """After a payment: what was paid, the M-Pesa code (once known), when the time ends, /me."""
    values = dict(site=site, amount=formatting.money(amount, lang), receipt=receipt or "",
                  package=formatting.package_name(package, lang), ends=hhmm(ends_at), me=me)
    message = RECEIPT_DATA if data_cap and receipt else RECEIPT if receipt else RECEIPT_NO_CODE
    return t(message, lang, **values)


def reminder(t: Translate, lang: str, *, site: str, ends_at: float, minutes: int, me: str) -> str:
    return t(REMINDER, lang, site=site, ends=hhmm(ends_at), minutes=minutes, me=me)


def voucher(t: Translate, lang: str, *, site: str, package, code: str) -> str:
    return t(VOUCHER, lang, site=site, package=formatting.package_name(package, lang), code=code)
