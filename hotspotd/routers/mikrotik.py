"""The controller's side of a MikroTik router: who is online, log a device in, throw it out.

Speaks the RouterOS API through librouteros over one connection per router, opened on first use,
reused under a lock and opened again after it breaks. Every failure is one of two exceptions,
each naming the router: :class:`RouterUnavailable` (cannot reach it, it timed out, it closed the
connection: try again later) and :class:`RouterError` (it answered with a ``!trap``: retrying will not help).
"""
from __future__ import annotations

import functools
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import librouteros
from librouteros.api import Api
from librouteros.exceptions import ConnectionClosed, FatalError, LibRouterosError, MultiTrapError, TrapError
from librouteros.query import Key

from hotspotd.config import Router
from hotspotd.disconnects import Target
from hotspotd.routers import RouterError, RouterUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class MikroTikRouter:
    """One MikroTik router's API, as configured by a ``[[routers]]`` entry.

    ``timeout`` bounds the TCP connect, the TLS handshake and every wait for a reply. With
    ``router.tls`` the connection goes to api-ssl and the certificate is verified against
    ``ssl_context`` (default: the system's CA store and the router's address as host name).
    MACs are given as ``AA:BB:CC:DD:EE:FF``. Safe to share between threads.
    """

    def __init__(self, router: Router, *, timeout: float = 5.0, ssl_context: ssl.SSLContext | None = None):
        self.router = router
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._api: Api | None = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        """The router's address (its RADIUS accounting comes from there)."""
        return self.router.address

    def __repr__(self) -> str:
        return f"<MikroTikRouter {self.router.name!r} {self.router.address}:{self.router.api_port}>"

    # ---- operations

    def ping(self) -> dict[str, str]:
        """Check the router answers: ``{"identity", "version", "uptime", "board_name"}``."""
        def run(api: Api) -> dict[str, str]:
            identity = next(iter(api.path("system", "identity")), {})
            resource = next(iter(api.path("system", "resource")), {})
            return {"identity": str(identity.get("name", "")), "version": str(resource.get("version", "")),
                    "uptime": str(resource.get("uptime", "")), "board_name": str(resource.get("board-name", ""))}
        return self._call("ping", run)

    def active_for(self, mac: str) -> list[dict[str, Any]]:
        """The ``/ip/hotspot/active`` entries of ``mac`` (values as librouteros converts them)."""
        return self._call("list active sessions", lambda api: self._find(api, "active", mac))

    def readiness(self) -> dict[str, Any]:
        """What ``hotspotd check`` reads of the router's configuration: ``version``, ``device_mode``
        (None: no such menu, RouterOS before 7.13), ``radius_incoming``, ``radius`` (the hotspot
        RADIUS entries), ``group`` and ``policy`` (the API user's group and its policy words),
        ``profiles`` (the profiles of the hotspot servers). Values as librouteros gives them (``yes``/``true`` already booleans)."""
        def menu(api: Api, *path: str) -> list[dict[str, Any]] | None:
            try:
                return list(api.path(*path))
            except TrapError:           # "no such command prefix": this RouterOS has no such menu
                return None

        def run(api: Api) -> dict[str, Any]:
            resource = next(iter(api.path("system", "resource")), {})
            users = menu(api, "user") or []
            groups = {g.get("name"): g for g in menu(api, "user", "group") or []}
            me = next((u for u in users if u.get("name") == self.router.user), {})
            policy = str(groups.get(me.get("group"), {}).get("policy", "")).split(",") if me else []
            servers = menu(api, "ip", "hotspot") or []
            used = {str(s.get("profile", "")) for s in servers}
            return {"version": str(resource.get("version", "")),
                    "device_mode": next(iter(menu(api, "system", "device-mode") or []), None),
                    "radius_incoming": next(iter(menu(api, "radius", "incoming") or []), {}),
                    "radius": [r for r in menu(api, "radius") or [] if "hotspot" in str(r.get("service", ""))],
                    "group": str(me.get("group", "")), "policy": policy,
                    "profiles": [p for p in menu(api, "ip", "hotspot", "profile") or [] if p.get("name") in used]}
        return self._call("read the configuration", run)

    def active(self) -> list[dict[str, str]]:
        """Every ``/ip/hotspot/active`` session: ``{"mac", "ip", "user"}`` (MAC in capitals with colons)."""
        def run(api: Api) -> list[dict[str, str]]:
            return [{"mac": str(row.get("mac-address", "")).upper().replace("-", ":"), "ip": str(row.get("address", "")),
                     "user": str(row.get("user", ""))} for row in api.path("ip", "hotspot", "active")]
        return self._call("list active sessions", run)

    def hosts(self) -> list[dict[str, str]]:
        """Every device the hotspot sees now (``/ip/hotspot/host``): ``{"mac", "ip", "authorized"}``."""
        def run(api: Api) -> list[dict[str, str]]:
            return [{"mac": str(row.get("mac-address", "")).upper().replace("-", ":"), "ip": str(row.get("address", "")),
                     "authorized": str(row.get("authorized", "")).lower() in ("true", "yes")}
                    for row in api.path("ip", "hotspot", "host")]
        return self._call("list hosts", run)

    def is_online(self, mac: str) -> bool:
        """True when ``mac`` has an active hotspot session."""
        return bool(self._call("check session", lambda api: self._find(api, "active", mac, Key(".id"))))

    def disconnect(self, mac: str) -> int:
        """End ``mac``'s hotspot sessions and delete its login cookies; returns how many sessions ended.

        Without the cookies gone a device logged in by cookie would come straight back.
        """
        def run(api: Api) -> int:
            ended = self._remove_all(api, "active", mac)
            cookies = self._remove_all(api, "cookie", mac)
            log.info("router %s: disconnected %s (%d session(s), %d cookie(s))", self.router.name, mac, ended, cookies)
            return ended
        return self._call("disconnect", run)

    @property
    def name(self) -> str:
        return self.router.name

    def cut(self, target: Target) -> bool:
        """The :class:`hotspotd.disconnects.Cutter` contract: disconnect, then check it is gone."""
        try:
            self.disconnect(target.mac)
            return not self.is_online(target.mac)
        except RouterError as exc:      # a refused API login or command: for the queue, not asked
            raise RouterUnavailable(str(exc)) from exc

    def login(self, mac: str, ip: str, username: str, password: str) -> None:
        """Log the device in (``/ip/hotspot/active/login``), as a splash-page login would."""
        def run(api: Api) -> None:
            tuple(api.path("ip", "hotspot", "active")("login", user=username, password=password,
                                                      **{"mac-address": mac, "ip": ip}))
            log.info("router %s: logged in %s at %s as %s", self.router.name, mac, ip, username)
        self._call("login", run)

    def close(self) -> None:
        """Close the connection (the next operation opens a new one)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> "MikroTikRouter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- helpers

    @staticmethod
    def _find(api: Api, menu: str, mac: str, *keys: Key) -> list[dict[str, Any]]:
        query = api.path("ip", "hotspot", menu).select(*keys).where(Key("mac-address") == mac)
        return list(query)

    def _remove_all(self, api: Api, menu: str, mac: str) -> int:
        path = api.path("ip", "hotspot", menu)
        removed = 0
        for row in self._find(api, menu, mac, Key(".id")):
            try:  # one at a time: an entry that ended meanwhile must not stop the others
                path.remove(str(row[".id"]))
                removed += 1
            except TrapError as exc:
                if "no such item" not in str(exc):
                    raise
        return removed

    def _call(self, what: str, operation: Callable[[Api], T]) -> T:
        """Run ``operation`` on the connection; map failures to RouterUnavailable / RouterError.

        A reused connection that turns out closed (router rebooted, idle connection dropped) is
        opened again and the operation tried once more; a timeout is not retried.
        """
        with self._lock:
            for attempt in (1, 2):
                reused = self._api is not None
                api = self._api if reused else self._connect()
                try:
                    return operation(api)
                except (TrapError, MultiTrapError) as exc:
                    raise RouterError(f"{self._where()}: {what} refused: {exc}") from exc
                except (LibRouterosError, OSError) as exc:
                    self._drop()
                    if reused and attempt == 1 and isinstance(exc, (ConnectionClosed, FatalError, ConnectionError)):
                        log.info("%s: connection was closed (%s); reconnecting", self._where(), exc)
                        continue
                    raise RouterUnavailable(f"{self._where()}: {what} failed: {_reason(exc)}") from exc
                except Exception:
                    self._drop()  # whatever went wrong, the reply stream may be out of step now
                    raise
        raise AssertionError("unreachable")

    def _connect(self) -> Api:
        r = self.router
        wrapper = None
        if r.tls:
            context = self._ssl_context or ssl.create_default_context()
            wrapper = functools.partial(context.wrap_socket, server_hostname=r.address)
        try:
            self._api = librouteros.connect(r.address, r.user, r.password, port=r.api_port,
                                            timeout=self.timeout, ssl_wrapper=wrapper)
        except (TrapError, MultiTrapError) as exc:
            raise RouterError(f"{self._where()}: API login as {r.user!r} refused: {exc}") from exc
        except (LibRouterosError, OSError) as exc:
            raise RouterUnavailable(f"{self._where()}: cannot connect: {_reason(exc)}") from exc
        log.debug("%s: connected", self._where())
        return self._api

    def _drop(self) -> None:
        if self._api is not None:
            api, self._api = self._api, None
            try:
                api.close()
            except OSError:
                pass

    def _where(self) -> str:
        r = self.router
        return f"router {r.name!r} ({r.address}:{r.api_port}{' TLS' if r.tls else ''})"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__
