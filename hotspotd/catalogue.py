"""The package catalogue: what customers can buy, and the one set of rules for a package.

The dashboard's package form and ``hotspotd packages add|edit`` both go through :func:`parse`
(text or numbers in, the :class:`~hotspotd.storage.models.Package` fields and the errors by field
out), then :func:`add` or :func:`save`. Caps are stored in bytes as MB × 1024 × 1024.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import clock
from .payments import MAX_AMOUNT
from .storage.models import Package, database

#: the fields of a package as a form or the CLI gives them
FIELDS = ("name", "name_sw", "price", "minutes", "data_mb", "rate", "devices")
MAX_DEVICES = 10
MAX_MINUTES = 366 * 24 * 60
MAX_DATA_MB = 10_000_000
MAX_NAME = 64
#: a MikroTik rate limit, rx/tx (rx is the client's upload): ``2M/5M``, ``512k/1M``
RATE = re.compile(r"\d+(\.\d+)?[kKmMgG]?/\d+(\.\d+)?[kKmMgG]?")
MB = 1024 * 1024


def whole(values: Mapping[str, Any], key: str, low: int, high: int, errors: dict, what: str,
          optional: bool = False) -> int | None:
    """``values[key]`` as a whole number from ``low`` to ``high`` (thousands commas allowed), else
    None with ``errors[key]`` saying what is wanted; empty is None without an error if ``optional``."""
    text = str(values.get(key) if values.get(key) is not None else "").strip().replace(",", "")
    if not text and optional:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        errors[key] = f"{what}: a whole number from {low:,} to {high:,}"
        return None
    return value


def parse(values: Mapping[str, Any]) -> tuple[dict, dict]:
    """The Package fields from ``values`` (keys :data:`FIELDS`, text or numbers), and the errors
    keyed by those names; the fields are only to be used when there is no error."""
    errors: dict[str, str] = {}
    name = " ".join(str(values.get("name") or "").split())
    if not name:
        errors["name"] = "enter the name customers will see"
    elif len(name) > MAX_NAME:
        errors["name"] = f"at most {MAX_NAME} characters"
    name_sw = " ".join(str(values.get("name_sw") or "").split())
    if len(name_sw) > MAX_NAME:
        errors["name_sw"] = f"at most {MAX_NAME} characters"
    price = whole(values, "price", 1, MAX_AMOUNT, errors, "price in KES")
    minutes = whole(values, "minutes", 1, MAX_MINUTES, errors, "minutes")
    data_mb = whole(values, "data_mb", 1, MAX_DATA_MB, errors, "data cap in MB (empty: unlimited)", optional=True)
    rate = str(values.get("rate") or "").strip()
    if rate and not RATE.fullmatch(rate):
        errors["rate"] = "upload/download such as 2M/5M (k, M or G), or empty for no limit"
    devices = whole(values, "devices", 1, MAX_DEVICES, errors, "devices")
    fields = {"name": name, "name_sw": name_sw or None, "price": price, "duration_seconds": (minutes or 0) * 60,
              "data_cap_bytes": data_mb * MB if data_mb else None, "rate_limit": rate or None,
              "devices": devices}
    return fields, errors


def values_of(p: Package) -> dict[str, str]:
    """``p`` as :func:`parse` takes it (what an edit starts from)."""
    return {"name": p.name, "name_sw": p.name_sw or "", "price": str(p.price), "minutes": str(p.duration_seconds // 60),
            "data_mb": str(p.data_cap_bytes // MB) if p.data_cap_bytes else "",
            "rate": p.rate_limit or "", "devices": str(p.devices)}


def add(fields: Mapping[str, Any]) -> Package:
    """A new package (fields from :func:`parse`, plus ``site``/``roams``), last in the list."""
    with database.atomic():
        position = (Package.select(Package.position).order_by(Package.position.desc()).scalar() or 0) + 1
        return Package.create(**fields, position=position, created_at=clock.now())


def save(p: Package, fields: Mapping[str, Any]) -> None:
    """Change package ``p`` (fields from :func:`parse`, and ``site``/``roams``)."""
    Package.update(**fields).where(Package.id == p.id).execute()


def set_active(p: Package, active: bool) -> None:
    """Offer ``p`` again, or stop offering it."""
    Package.update(active=active).where(Package.id == p.id).execute()
