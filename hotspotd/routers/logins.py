"""After payment, logging the device in at its venue's MikroTik over the RouterOS API (the other
way is the browser's login form, :mod:`hotspotd.router_login`). Each try leaves an Event:
``router_login`` or ``router_login_failed``.

Logins run on a small worker pool: a slow router never holds up the web or RADIUS paths.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from .. import access, clock
from ..storage.models import Event, Payment
from . import RouterError, RouterUnavailable

log = logging.getLogger(__name__)


class ApiLogins:
    """Logs paid devices in at ``routers`` (each with ``name`` and ``login(mac, ip, user, password)``),
    choosing those of the payment's venue (``router_sites``: router name → venue)."""

    def __init__(self, routers: Sequence, router_sites: Mapping[str, str], metrics=None, workers: int = 2):
        self.routers, self.router_sites, self.metrics = list(routers), dict(router_sites), metrics
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="router-login") if self.routers else None

    def submit(self, payment: Payment) -> None:
        """Queue ``payment``'s device for a login; returns at once."""
        if self._pool is not None:
            self._pool.submit(self.login, payment.id)

    def login(self, payment_id: int) -> None:
        """Log in the device of ``payment_id`` at the first of its venue's routers that takes it."""
        payment = Payment.get_by_id(payment_id)
        ctx = json.loads(payment.login_context) if payment.login_context else {}
        ent = access.entitlement_of(payment)
        mac, ip = payment.mac, ctx.get("ip")
        if ent is None or not mac or not ip:
            return
        errors = []
        for router in self.routers:
            if self.router_sites.get(router.name) != payment.site:
                continue
            try:
                router.login(mac, ip, ent.login_user, ent.login_password)
            except (RouterError, RouterUnavailable) as exc:
                errors.append(str(exc))
                continue
            Event.create(at=clock.now(), kind="router_login", payment=payment.id, entitlement=ent.id, mac=mac,
                         message=f"logged in at router {router.name} over the API")
            if self.metrics:
                self.metrics.online(ent.id)
            return
        Event.create(at=clock.now(), kind="router_login_failed", payment=payment.id, entitlement=ent.id, mac=mac,
                     message="; ".join(errors)[:500])

    def close(self) -> None:
        """Finish the login under way, drop those queued."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
