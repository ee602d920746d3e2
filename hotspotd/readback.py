"""The router read-back: what each router says is online, against what was sold.

Every few minutes (the ``readback`` job) and when the owner asks on the health page, each router
that can be read (a MikroTik over its API) is asked for its active sessions and the devices it
sees, and the differences are corrected:

* a device online with no time at that venue is queued for a cut (only hotspotd's own logins:
  a MAC login or an ``hs<N>`` user; a user the owner made on the router is reported, never cut);
* a device the router sees, with time left at that venue but no active session (the router lost
  it: a reboot, an idle timeout, a session timeout before an extension), is logged back in with
  its session's own username and password;
* an accounting session still open for that router whose device the router no longer lists is
  ended (the Stop never came).

A CoovaChilli cannot be asked who is online (it has no controller API); its accounting is what it
says. For each, the read-back takes the accounting sessions still open at its address: a device on
one without time at that venue is queued for a cut (a Disconnect-Request), and a session no
Interim-Update has refreshed for ``quiet_after`` seconds (missed updates: chilli lost it) is ended.

An openNDS gateway (level 3) is asked through hotspotd's agent on it, which sends the clients of
``ndsctl json`` (:meth:`hotspotd.routers.opennds.Gateway.clients`): an Authenticated device without
time at that venue is queued for a cut (the agent's ``ndsctl deauth``); a Preauthenticated one with
time left (openNDS dropped it: a session it timed out before an extension, a reboot) is queued for
authmon again, by MAC (openNDS authenticates a MAC on its client list). A device with time the
gateway does not list at all is let in on its next visit to the splash page: authmon cannot
authenticate a MAC openNDS has not seen.

Each run's findings are kept per router (:attr:`Readback.last`) for the health page and /metrics.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import access, clock, disconnects
from .routers import RouterError, RouterUnavailable
from .storage.models import AcctSession, Entitlement, Event

log = logging.getLogger(__name__)

#: the usernames hotspotd gives routers: a MAC (MAC login) or a session's own login
OURS = re.compile(r"(?i)([0-9a-f]{2}[:-]){5}[0-9a-f]{2}|[0-9a-f]{12}|hs\d+")
EXAMPLES = 5


@dataclass
class Drift:
    """One router's read-back: what it listed and what had to be put right."""
    router: str
    at: float
    online: int = 0
    cut: list[str] = field(default_factory=list)            # online without time: cut queued
    logged_in: list[str] = field(default_factory=list)      # paid, seen, not online: logged back in
    not_logged_in: list[str] = field(default_factory=list)  # paid, seen, the router refused the login
    foreign: list[str] = field(default_factory=list)        # logged in by a user hotspotd did not make
    ended: int = 0                                          # accounting sessions the router no longer has
    error: str | None = None

    @property
    def corrections(self) -> int:
        return len(self.cut) + len(self.logged_in) + self.ended


class Readback:
    """Reads back ``routers`` (objects with ``name``, ``router.address``, ``active()``, ``hosts()`` and
    ``login()``: :class:`hotspotd.routers.mikrotik.MikroTikRouter`); ``router_sites``: name → venue."""

    def __init__(self, routers: Sequence, router_sites: Mapping[str, str],
                 accounting_routers: Sequence[tuple[str, str]] = (), quiet_after: float = 900.0,
                 gateways: Sequence = ()):
        self.routers = list(routers)
        #: openNDS gateways read back through their agent (:class:`hotspotd.routers.opennds.Gateway`)
        self.gateways = list(gateways)
        self.router_sites = dict(router_sites)
        #: ``(name, address)`` of the routers read back from their accounting (CoovaChilli)
        self.accounting_routers = list(accounting_routers)
        self.quiet_after = quiet_after
        #: router name → its latest :class:`Drift`
        self.last: dict[str, Drift] = {}

    def names(self) -> list[str]:
        """The routers read back."""
        return ([r.name for r in self.routers] + [name for name, _ in self.accounting_routers]
                + [g.name for g in self.gateways])

    def covers(self) -> bool:
        """Whether any router is read back here."""
        return bool(self.names())

    def run(self, now: float | None = None) -> list[Drift]:
        """Read back every router once; a router that cannot be asked is reported, not retried here."""
        now = clock.now() if now is None else now
        out = [self._one(router, now) for router in self.routers]
        out += [self._from_accounting(name, address, now) for name, address in self.accounting_routers]
        out += [self._from_gateway(gateway, now) for gateway in self.gateways]
        for drift in out:
            self.last[drift.router] = drift
        return out

    def _one(self, router, now: float) -> Drift:
        drift = Drift(router.name, now)
        site = self.router_sites.get(router.name)
        try:
            active = router.active()
            hosts = router.hosts()
        except (RouterUnavailable, RouterError) as exc:
            drift.error = str(exc)
            return drift
        drift.online = len(active)
        online = {a["mac"] for a in active}
        for entry in active:
            if access.authorize(entry["mac"], now=now, site=site) is not None:
                continue
            if not OURS.fullmatch(entry["user"] or ""):
                drift.foreign.append(f"{entry['mac']} ({entry['user']})")
                continue
            _cut(drift, entry["mac"], router.name, now)
        for host in hosts:
            if host["mac"] in online or not host["ip"]:
                continue
            grant = access.authorize(host["mac"], now=now, site=site)
            if grant is None:
                continue
            ent = Entitlement.get_or_none(Entitlement.id == grant.entitlement_id)
            if ent is None or not ent.login_user:
                continue
            try:
                router.login(host["mac"], host["ip"], ent.login_user, ent.login_password)
            except (RouterUnavailable, RouterError) as exc:
                drift.not_logged_in.append(f"{host['mac']}: {exc}")
                continue
            drift.logged_in.append(host["mac"])
            Event.create(at=now, kind="router_login", entitlement=ent.id, mac=host["mac"],
                         message=f"read-back: logged back in at router {router.name}")
        stale = (AcctSession.update(online=False, stopped_at=now, terminate_cause="Lost-Service")
                 .where(AcctSession.online, AcctSession.nas == router.router.address,
                        AcctSession.mac.not_in(sorted(online)) if online else AcctSession.mac.is_null(False)))
        drift.ended = stale.execute()
        if drift.corrections or drift.foreign:
            log.warning("router %s read-back: %d online, %d cut queued, %d logged back in, %d accounting "
                        "session(s) ended, %d by other users", router.name, drift.online, len(drift.cut),
                        len(drift.logged_in), drift.ended, len(drift.foreign))
        return drift

    def _from_accounting(self, name: str, address: str, now: float) -> Drift:
        drift = Drift(name, now)
        site = self.router_sites.get(name)
        rows = list(AcctSession.select(AcctSession.id, AcctSession.mac, AcctSession.updated_at)
                    .where(AcctSession.online, AcctSession.nas == address))
        quiet = [r.id for r in rows if now - r.updated_at > self.quiet_after]
        if quiet:
            drift.ended = (AcctSession.update(online=False, stopped_at=now, terminate_cause="Lost-Service")
                           .where(AcctSession.id.in_(quiet)).execute())
        live = [r for r in rows if r.id not in quiet and r.mac]
        drift.online = len({r.mac for r in live})
        for mac in sorted({r.mac for r in live}):
            if access.authorize(mac, now=now, site=site) is None:
                _cut(drift, mac, name, now)
        if drift.corrections:
            log.warning("router %s read-back (accounting): %d online, %d cut queued, %d quiet session(s) ended",
                        name, drift.online, len(drift.cut), drift.ended)
        return drift

    def _from_gateway(self, gateway, now: float) -> Drift:
        drift = Drift(gateway.name, now)
        site = self.router_sites.get(gateway.name, gateway.site)
        try:
            listed = gateway.clients()
        except RouterUnavailable as exc:
            drift.error = str(exc)
            return drift
        drift.online = len(listed.authenticated)
        for mac in sorted(listed.authenticated):
            if access.authorize(mac, now=now, site=site) is None:
                _cut(drift, mac, gateway.name, now)
        pending = set(gateway.pending())
        for mac in sorted(listed.preauthenticated - pending):
            grant = access.authorize(mac, now=now, site=site)
            if grant is None:
                continue
            gateway.authorise(mac, grant)
            drift.logged_in.append(mac)
            Event.create(at=now, kind="router_login", entitlement=grant.entitlement_id, mac=mac,
                         message=f"read-back: queued for authmon again at openNDS {gateway.name}")
        if drift.corrections:
            log.warning("openNDS %s read-back: %d authenticated, %d cut queued, %d queued for authmon again",
                        gateway.name, drift.online, len(drift.cut), len(drift.logged_in))
        return drift


def _cut(drift: Drift, mac: str, router: str, now: float) -> None:
    """Queue the cut of ``mac``, online at ``router`` without time (one already pending is not doubled)."""
    if disconnects.enqueue(mac, [router], entitlement_id=None, reason="read-back: online, no time", now=now):
        drift.cut.append(mac)
