"""How quantities read: one formatter per unit (money, data sizes, durations, speeds), in English
(``en``) or Kiswahili (``sw``), for the splash page, the portal API, the dashboard and the reports.

Every screen that shows a quantity calls the function here, so the same 5000 MB cap reads the
same everywhere. Numbers and unit words come from CLDR through Babel (plain ``babel``, no Flask):
Kiswahili writes the unit first (``dakika 30``, ``GB 4.9``, ``Mbps 5``).

* Data caps are stored in bytes as MB × 1024 × 1024 (``hotspotd package add --data-mb``, the
  dashboard's "Data cap (MB)"), so sizes step by 1024 and are labelled KB/MB/GB as the product
  always has: 5000 MB is 4.9 GB.
* Speeds are MikroTik rate limits (``rx/tx``, rx being the client's upload, in bit/s with k/M/G
  steps of 1000); a customer reads the download (tx) speed in kbps or Mbps.
"""
from __future__ import annotations

import re
from decimal import Decimal

from babel.numbers import format_decimal
from babel.units import format_unit

LANGS = ("en", "sw")
#: languages that put the unit symbol before the number (CLDR's "MB {0}" for Kiswahili)
_UNIT_FIRST = frozenset({"sw"})

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)([kKmMgG]?)\s*$")
_RATE_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def _lang(lang: str | None) -> str:
    return lang if lang in LANGS else "en"


def _number(value: float, lang: str, decimals: int = 0) -> str:
    pattern = "#,##0" + ("." + "0" * decimals if decimals else "")
    return format_decimal(value, format=pattern, locale=_lang(lang))


def _with_symbol(number: str, symbol: str, lang: str) -> str:
    return f"{symbol} {number}" if _lang(lang) in _UNIT_FIRST else f"{number} {symbol}"


def money(amount: int | float | None, lang: str = "en") -> str:
    """Whole Kenyan shillings: ``KES 1,500`` (the product's way, in both languages)."""
    return f"KES {_number(int(amount or 0), lang)}"


def size(n: int | None, lang: str = "en") -> str:
    """Bytes in binary steps: ``512 B``, ``900 KB``, ``500 MB``, ``4.9 GB`` (``GB 4.9`` in Kiswahili);
    one decimal below 10 unless whole. ``""`` for None (no cap: the caller says what that means)."""
    if n is None:
        return ""
    value = float(max(int(n), 0))
    for symbol in ("B", "KB", "MB", "GB"):
        if value < 1024 or symbol == "GB":
            break
        value /= 1024
    if symbol in ("B", "KB") or value >= 10 or value == int(value):
        text = _number(round(value) if symbol not in ("B", "KB") else int(value), lang)
    else:
        text = _number(value, lang, 1)
    return _with_symbol(text, symbol, lang)


def duration(seconds: int | float, lang: str = "en") -> str:
    """A length of time in its largest whole unit, in words: ``30 minutes`` / ``dakika 30``,
    ``1 hour`` / ``saa 1``, ``2 days`` / ``siku 2`` (90 minutes stay ``90 minutes``)."""
    seconds = int(seconds or 0)
    for unit, step in (("duration-day", 86400), ("duration-hour", 3600)):
        if seconds >= step and seconds % step == 0:
            return format_unit(seconds // step, unit, length="long", locale=_lang(lang))
    return format_unit(max(round(seconds / 60), 1), "duration-minute", length="long", locale=_lang(lang))


def time_left(seconds: int | float | None, lang: str = "en") -> str:
    """A countdown to the minute: ``2 h 05 min`` / ``saa 2 dakika 5``, ``1 d 3 h`` / ``siku 1 saa 3``,
    ``45 min`` / ``dakika 45``."""
    seconds = max(int(seconds or 0), 0)
    days, rest = divmod(seconds, 86400)
    hours, minutes = divmod(rest // 60, 60)
    if _lang(lang) == "sw":
        if days:
            return f"siku {days} saa {hours}" if hours else f"siku {days}"
        return f"saa {hours} dakika {minutes}" if hours else f"dakika {minutes}"
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    return f"{minutes} min"


def parse_rate(text: str | None) -> tuple[int, int] | None:
    """MikroTik ``rx/tx`` (rx = the client's upload) → (up, down) in bit/s; None if unset or unreadable."""
    if not text or "/" not in text:
        return None
    parts = text.split(" ")[0].split("/")[:2]
    values = []
    for part in parts:
        m = _RATE.match(part)
        if not m:
            return None
        values.append(int(Decimal(m.group(1)) * _RATE_UNITS[m.group(2).lower()]))   # exact: 4.35M is 4350000
    return values[0], values[1]


def speed(rate_limit: str | None, lang: str = "en") -> str:
    """The download speed of a rate limit: ``2M/5M`` → ``5 Mbps`` (``Mbps 5``), ``256k/512k`` →
    ``512 kbps``; ``""`` when there is none or it cannot be read."""
    rate = parse_rate(rate_limit)
    if rate is None or rate[1] <= 0:
        return ""
    down = rate[1]
    if down >= 1_000_000:
        value, symbol = down / 1_000_000, "Mbps"
    else:
        value, symbol = down / 1_000, "kbps"
    text = _number(value, lang) if value == int(value) or value >= 10 else _number(value, lang, 1)
    return _with_symbol(text, symbol, lang)


def package_name(package, lang: str = "en") -> str:
    """A package's name as the customer reads it: its Kiswahili name on a Kiswahili page (where it
    has one), else its name."""
    return (getattr(package, "name_sw", None) if lang == "sw" else None) or package.name


def phone_local(phone: str | None) -> str:
    """A stored ``2547…`` number as a customer types it: ``0708 374 149``."""
    if not phone or not phone.startswith("254") or len(phone) != 12:
        return phone or ""
    local = "0" + phone[3:]
    return f"{local[:4]} {local[4:7]} {local[7:]}"
