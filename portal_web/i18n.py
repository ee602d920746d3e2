"""The splash page's words in English and Kiswahili, and how a language is chosen.

The language comes from ``?lang=`` (remembered in a cookie), else the browser's Accept-Language,
else English. Every customer-facing string of the splash page is here, in both languages.
"""
from __future__ import annotations

from functools import lru_cache

from flask import request
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

LANGS = ("en", "sw")

TEXT: dict[str, tuple[str, str]] = {
    # key: (English, Kiswahili)
    "choose": ("Choose a package", "Chagua kifurushi"),
    "phone_label": ("M-Pesa phone number", "Nambari ya simu ya M-Pesa"),
    "pay": ("Pay with M-Pesa", "Lipa kwa M-Pesa"),
    "already_paid": ("Already paid?", "Umeshalipa?"),
    "already_paid_hint": ("Your phone changed its Wi-Fi address or the page closed while paying? "
                          "Enter the M-Pesa code from the SMS and get your time back on this device.",
                          "Simu yako imebadilisha anwani ya Wi-Fi au ukurasa ulifungwa ukilipa? "
                          "Weka msimbo wa M-Pesa kutoka kwenye SMS upate muda wako kwenye kifaa hiki."),
    "receipt_label": ("M-Pesa code (from the SMS, e.g. SKL2ABC3DE)", "Msimbo wa M-Pesa (kwenye SMS, mfano SKL2ABC3DE)"),
    "paid_phone_label": ("Phone number you paid with", "Nambari ya simu uliyolipia"),
    "restore": ("Get my time back", "Rudisha muda wangu"),
    "voucher": ("Have a voucher?", "Una vocha?"),
    "voucher_label": ("Voucher code", "Msimbo wa vocha"),
    "use_voucher": ("Use voucher", "Tumia vocha"),
    "check_phone": ("Check your phone", "Angalia simu yako"),
    "steps": ("1. Unlock your phone. 2. The M-Pesa prompt asks you to pay KES {amount} to {site}. "
              "3. Enter your M-Pesa PIN and press OK.",
              "1. Fungua simu yako. 2. Ombi la M-Pesa litakuomba ulipe KES {amount} kwa {site}. "
              "3. Weka PIN yako ya M-Pesa kisha ubonyeze OK."),
    "countdown": ("The prompt stays open for about {seconds} seconds.", "Ombi litakaa wazi kwa takriban sekunde {seconds}."),
    "waiting": ("Waiting for M-Pesa…", "Tunasubiri M-Pesa…"),
    "online": ("You are online", "Umeunganishwa"),
    "welcome_back": ("Welcome back, you still have time", "Karibu tena, bado una muda"),
    "time_left": ("Time left", "Muda uliobaki"),
    "data_left": ("Data left", "Data iliyobaki"),
    "until": ("until {time}", "hadi {time}"),
    "connect": ("Connect now", "Unganisha sasa"),
    "connecting": ("Connecting you to the internet…", "Tunakuunganisha kwenye mtandao…"),
    "try_again": ("Try again", "Jaribu tena"),
    "back": ("Back to packages", "Rudi kwenye vifurushi"),
    "failed_title": ("Payment not completed", "Malipo hayajakamilika"),
    "random_mac": ("Your phone uses a private (random) Wi-Fi address on this network. If it changes, "
                   "for example after you forget the network, use \"Already paid?\" with your M-Pesa code "
                   "to bring your time back.",
                   "Simu yako inatumia anwani binafsi (ya nasibu) ya Wi-Fi kwenye mtandao huu. Ikibadilika, "
                   "kwa mfano ukisahau mtandao huu, tumia \"Umeshalipa?\" pamoja na msimbo wako wa M-Pesa "
                   "kurudisha muda wako."),
    "no_device": ("Open this page from the Wi-Fi login screen so we know which device to connect.",
                  "Fungua ukurasa huu kutoka skrini ya kuingia ya Wi-Fi ili tujue kifaa cha kuunganisha."),
    "phone_error": ("Enter a Safaricom M-Pesa number, e.g. 0712 345 678.",
                    "Weka nambari ya M-Pesa ya Safaricom, mfano 0712 345 678."),
    "package_error": ("Choose a package.", "Chagua kifurushi."),
    "too_many": ("Too many tries. Wait a minute and try again.", "Majaribio mengi mno. Subiri dakika moja kisha ujaribu tena."),
    "moved": ("Your time is now on this device.", "Muda wako sasa uko kwenye kifaa hiki."),
    "voucher_ok": ("Voucher accepted.", "Vocha imekubaliwa."),
    "data": ("{amount} data", "data {amount}"),
    "speed": ("up to {rate}", "hadi {rate}"),
    "devices": ("{n} devices", "vifaa {n}"),
    "roams": ("works at all our venues", "inatumika katika maeneo yetu yote"),
    "no_packages": ("No packages on offer right now. Please ask the staff.",
                    "Hakuna vifurushi kwa sasa. Tafadhali waulize wahudumu."),
    "unknown_site": ("This Wi-Fi's sign-in page is not set up correctly (unknown venue). Please tell the staff.",
                     "Ukurasa wa kuingia wa Wi-Fi hii haujawekwa sawa (eneo lisilojulikana). Tafadhali waambie "
                     "wahudumu."),
}

#: Kiswahili for the customer messages the core raises in English (access, vouchers)
SWAHILI = {
    "We found no payment with that M-Pesa code from that phone number. Check the code in the M-Pesa SMS "
    "and the number you paid with.":
        "Hatukupata malipo yenye msimbo huo wa M-Pesa kutoka kwa nambari hiyo. Angalia msimbo kwenye SMS "
        "ya M-Pesa na nambari uliyolipia.",
    "The time bought with this payment has run out.": "Muda ulionunuliwa kwa malipo haya umekwisha.",
    "The data bought with this payment has been used up.": "Data iliyonunuliwa kwa malipo haya imekwisha.",
    "That is not a voucher code. It looks like ABCDE-23456.": "Huo si msimbo wa vocha. Unafanana na ABCDE-23456.",
    "This voucher code is not valid. Check it and try again.": "Msimbo huu wa vocha si sahihi. Uangalie kisha ujaribu tena.",
    "This voucher has already been used.": "Vocha hii imeshatumika.",
    "This time was bought at another of our venues and works only there.":
        "Muda huu ulinunuliwa katika eneo letu jingine na unatumika huko tu.",
    "This voucher is for another of our venues and works only there.":
        "Vocha hii ni ya eneo letu jingine na inatumika huko tu.",
}

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


def t(key: str, language: str, **values) -> str:
    english, swahili = TEXT[key]
    text = swahili if language == "sw" else english
    return text.format(**values) if values else text


def translate(message: str, language: str) -> str:
    """A core message in the page's language (English when no translation is known)."""
    return SWAHILI.get(message, message) if language == "sw" else message
