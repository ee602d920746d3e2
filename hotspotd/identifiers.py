"""Phone numbers and MAC addresses: parse anything a person or a router types, normalise, refuse clearly.

Phone numbers go through ``phonenumbers`` (Google's libphonenumber metadata) so new Safaricom
prefixes arrive with a library update rather than a code change.
"""
from __future__ import annotations

import gc
import importlib
import re
import sys

import phonenumbers

from .errors import DomainError

_MAC_HEX = re.compile(r"[0-9A-Fa-f]{12}")
_MAC_SEPARATED = re.compile(r"[0-9A-Fa-f]{1,2}([:\-.])(?:[0-9A-Fa-f]{1,2}\1){4}[0-9A-Fa-f]{1,2}")
_MAC_CISCO = re.compile(r"[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}")
_MAC_CANONICAL = re.compile(r"[0-9A-F]{2}(?::[0-9A-F]{2}){5}")


def _kenyan_carriers() -> dict[str, str]:
    """Kenya's part of libphonenumber's carrier table: number prefix (``25411``) → carrier.

    ``phonenumbers.carrier`` keeps the whole world's table in memory, 10 MB of a daemon that
    must fit a Raspberry Pi beside the router; Kenya's is a few dozen entries. So the table is
    loaded once, Kenya's prefixes copied, and the rest let go.
    """
    loaded = "phonenumbers.carrierdata" in sys.modules
    data = importlib.import_module("phonenumbers.carrierdata")
    kenyan = {prefix: names["en"] for prefix, names in data.CARRIER_DATA.items()
              if prefix.startswith("254") and "en" in names}
    if not loaded:
        del data
        for name in [m for m in sys.modules if m.startswith("phonenumbers.carrierdata")]:
            del sys.modules[name]
        phonenumbers.__dict__.pop("carrierdata", None)
        gc.collect()
    return kenyan


_KENYAN_CARRIERS = _kenyan_carriers()
_LONGEST_PREFIX = max(map(len, _KENYAN_CARRIERS), default=0)


def carrier_of(number: "phonenumbers.PhoneNumber") -> str:
    """The carrier a Kenyan mobile number was issued to (longest matching prefix), or ``""``."""
    digits = f"{number.country_code}{number.national_number}"
    for length in range(min(_LONGEST_PREFIX, len(digits)), 0, -1):
        name = _KENYAN_CARRIERS.get(digits[:length])
        if name:
            return name
    return ""


class InvalidPhone(DomainError, ValueError):
    """The number cannot receive an M-Pesa prompt; ``code`` says why (``phone_missing``,
    ``phone_not_digits``, ``phone_unreadable``, ``phone_not_kenyan``, ``phone_not_mobile``,
    ``phone_not_safaricom``), ``field`` is ``phone``."""

    def __init__(self, code: str):
        super().__init__(code, "phone")


class InvalidMac(ValueError):
    """Not a MAC address in any notation we know."""


def normalize_phone(text: str) -> str:
    """``0712 345 678``, ``+254712345678``, ``254712345678``, ``0112345678`` → ``2547…``/``2541…``.

    Raises :class:`InvalidPhone` for anything that is not a Safaricom mobile number.
    """
    if not isinstance(text, str):
        raise InvalidPhone("phone_missing")
    cleaned = re.sub(r"[\s\-().]", "", text)
    if not cleaned:
        raise InvalidPhone("phone_missing")
    if len(cleaned) > 16 or not re.fullmatch(r"\+?\d+", cleaned):
        raise InvalidPhone("phone_not_digits")
    if cleaned.startswith("254") and len(cleaned) == 12:
        cleaned = "+" + cleaned
    elif re.fullmatch(r"[17]\d{8}", cleaned):
        cleaned = "0" + cleaned   # 712345678: the leading 0 left out
    try:
        number = phonenumbers.parse(cleaned, "KE")
    except phonenumbers.NumberParseException:
        raise InvalidPhone("phone_unreadable") from None
    if number.country_code != 254 or not phonenumbers.is_valid_number(number):
        raise InvalidPhone("phone_not_kenyan")
    if phonenumbers.number_type(number) not in (phonenumbers.PhoneNumberType.MOBILE,
                                                phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
        raise InvalidPhone("phone_not_mobile")
    if carrier_of(number) != "Safaricom":
        raise InvalidPhone("phone_not_safaricom")
    national = str(number.national_number)
    if len(national) != 9 or national[0] not in "17":
        raise InvalidPhone("phone_not_mobile")
    return "254" + national


def mask_phone(phone: str | None) -> str:
    """``254712345678`` → ``2547****5678``: for logs and screens that others may see."""
    if not phone:
        return "-"
    return phone[:4] + "*" * max(len(phone) - 8, 0) + phone[-4:] if len(phone) > 8 else "****"


def normalize_mac(text: str) -> str:
    """Any common notation → ``AA:BB:CC:DD:EE:FF``.

    Accepts ``aa:bb:cc:dd:ee:ff``, ``AA-BB-…``, ``AABBCCDDEEFF``, ``aabb.ccdd.eeff`` and
    single-digit groups (``a:b:c:d:e:f``, as some tools print them).
    """
    if not isinstance(text, str):
        raise InvalidMac("not a MAC address")
    if _MAC_CANONICAL.fullmatch(text):   # already in the stored form: what MikroTik sends by default
        return text
    value = text.strip()
    if _MAC_HEX.fullmatch(value):
        digits = value
    elif _MAC_CISCO.fullmatch(value):
        digits = value.replace(".", "")
    elif _MAC_SEPARATED.fullmatch(value):
        digits = "".join(part.zfill(2) for part in re.split(r"[:\-.]", value))
    else:
        raise InvalidMac(f"not a MAC address: {text[:40]!r}")
    digits = digits.upper()
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def is_random_mac(mac: str) -> bool:
    """True for a locally administered address: what phones use for "private Wi-Fi address"."""
    first = int(normalize_mac(mac)[:2], 16)
    return bool(first & 0x02)
