"""After payment, logging the device in at its venue's MikroTik over the RouterOS API (the other
way is the browser's login form, :mod:`hotspotd.router_login`). Each try leaves an Event:
``router_login`` or ``router_login_failed``.

Logins run on a small worker pool: a slow router never holds up the web or RADIUS paths.
"""
from __future__ import annotations

import json
import logging
import threading
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
        self._stopping = threading.Event()

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
            how = self._login(router, mac, ip, ent.login_user, ent.login_password, errors)
            if how is None:
                continue
            Event.create(at=clock.now(), kind="router_login", payment=payment.id, entitlement=ent.id, mac=mac,
                         message=f"logged in at router {router.name} over the API" if how == "api" else
                         f"online at router {router.name} (the browser's own login came first)")
            if self.metrics:
                self.metrics.online(ent.id)
            return
        Event.create(at=clock.now(), kind="router_login_failed", payment=payment.id, entitlement=ent.id, mac=mac,
                     message="; ".join(errors)[:500])

    #: pauses between tries while the router does not know the device yet (``unknown host IP``: it
    #: has sent no traffic through the hotspot since it joined; seen at real venues right at payment)
    HOST_RACE_PAUSES = (0.5, 1.0, 2.0, 4.0)

    def _login(self, router, mac: str, ip: str, user: str, password: str, errors: list[str]) -> str | None:
        """Log ``mac`` in at ``router`` and read it back: ``"api"``, ``"browser"`` (it was already
        online: the splash page's own login won), or None with the reason in ``errors``. A ``!done``
        is not proof: only the router's active list is."""
        pauses = iter(self.HOST_RACE_PAUSES)
        while True:
            try:
                if router.is_online(mac):
                    return "browser"
                router.login(mac, ip, user, password)
                if router.is_online(mac):
                    return "api"
                errors.append(f"router {router.name}: the login was accepted but {mac} is not online there")
                return None
            except RouterError as exc:
                # Whatever the refusal says (a device already online gets one whose wording RouterOS
                # does not document), the router's active list decides: the browser may have won.
                try:
                    if router.is_online(mac):
                        return "browser"
                except (RouterError, RouterUnavailable):
                    pass
                pause = next(pauses, None) if "unknown host" in str(exc) else None
                if pause is None:
                    errors.append(str(exc))
                    return None
                self._stopping.wait(pause)
                if self._stopping.is_set():
                    errors.append(str(exc))
                    return None
            except RouterUnavailable as exc:
                errors.append(str(exc))
                return None

    def close(self) -> None:
        """Finish the login under way, drop those queued."""
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
