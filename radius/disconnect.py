"""Asking a NAS to end or change a session: RFC 5176 Disconnect-Request and CoA-Request, sent
with pyrad's client.

CoovaChilli listens when ``coaport 3799`` is set, MikroTik with ``/radius incoming set accept=yes``.
Both want User-Name; MikroTik finds the session best with Acct-Session-Id and Framed-IP-Address too.
Chilli takes requests only from its RADIUS server's address and drops others silently: the
socket is bound to ``source`` (``[[routers]] source_address``, else a specific ``[radius] listen``).

- The Request Authenticator is computed over the packet like an Accounting-Request's
  (RFC 5176 section 3.3, pyrad's ``CoAPacket.RequestPacket``) and a Message-Authenticator is
  always added (pyrad's ``CreateCoAPacket``, unlike ``CreateAuthPacket``, does not add one by itself).
- A reply counts only with a valid Response Authenticator and, when it has one, a valid
  Message-Authenticator; anything else is ignored as if it never came.
- Every call has its own socket, closed before returning: safe from many threads at once.
"""
from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from pyrad import packet
from pyrad.client import Client, Timeout
from pyrad.dictionary import Dictionary

from hotspotd.disconnects import Target
from hotspotd.routers import RouterError, RouterUnavailable

from .server import load_dictionary

log = logging.getLogger(__name__)

ERROR_CAUSE = 101
SESSION_CONTEXT_NOT_FOUND = 503


@functools.cache
def _dictionary() -> Dictionary:
    return load_dictionary()


@dataclass(frozen=True)
class DisconnectResult:
    """The NAS's signed answer to a Disconnect-Request."""
    acked: bool               #: Disconnect-ACK: the NAS ended the session
    code: int                 #: reply code, 41 Disconnect-ACK or 42 Disconnect-NAK
    error_cause: int | None   #: Error-Cause of the reply (RFC 5176 section 3.6), if it has one

    @property
    def gone(self) -> bool:
        """No session is left to cut: an ACK, or a NAK saying Session-Context-Not-Found (503)."""
        return self.acked or self.error_cause == SESSION_CONTEXT_NOT_FOUND

    @property
    def bare_nak(self) -> bool:
        """A NAK without Error-Cause: CoovaChilli's answer when it has no such session (it also
        gives no reason for anything else, so only accounting can tell what it means)."""
        return not self.acked and self.error_cause is None


def send_disconnect(address: str, port: int, secret: str, *, user_name: str,
                    calling_station_id: str | None = None, acct_session_id: str | None = None,
                    framed_ip: str | None = None, nas_identifier: str | None = None,
                    timeout: float = 2.0, retries: int = 2, source: str | None = None) -> DisconnectResult:
    """Send a Disconnect-Request for ``user_name`` (plus whichever session identifiers are given)
    to the NAS at ``address``:``port`` from ``source`` (None: the address the system picks) and
    return its answer.

    The request goes out at most ``retries + 1`` times, waiting ``timeout`` seconds after each,
    so the call returns or raises within about ``timeout * (retries + 1)`` seconds.
    Raises :class:`hotspotd.routers.RouterUnavailable` (its ``str()`` names address:port and why) when no valid reply arrives or the socket fails,
    and ``ValueError`` for an empty ``user_name`` or a value that cannot be encoded.
    """
    return _exchange(packet.DisconnectRequest, address, port, secret, {
        "User-Name": user_name, "Acct-Session-Id": acct_session_id, "Calling-Station-Id": calling_station_id,
        "Framed-IP-Address": framed_ip, "NAS-Identifier": nas_identifier}, timeout, retries, source)


def send_coa(address: str, port: int, secret: str, *, user_name: str, attributes: dict,
             acct_session_id: str | None = None, calling_station_id: str | None = None,
             framed_ip: str | None = None, timeout: float = 2.0, retries: int = 2,
             source: str | None = None) -> DisconnectResult:
    """Send a CoA-Request (RFC 5176) changing ``user_name``'s session to ``attributes`` (by
    dictionary name: Session-Timeout, bandwidth, quotas) and return the NAS's answer (``acked``:
    CoA-ACK). Timeouts, errors and ``source`` as for :func:`send_disconnect`."""
    return _exchange(packet.CoARequest, address, port, secret, {
        "User-Name": user_name, "Acct-Session-Id": acct_session_id, "Calling-Station-Id": calling_station_id,
        "Framed-IP-Address": framed_ip, **attributes}, timeout, retries, source)


_NAMES = {packet.DisconnectRequest: "Disconnect-Request", packet.CoARequest: "CoA-Request"}
_ANSWERS = {packet.DisconnectRequest: (packet.DisconnectACK, packet.DisconnectNAK),
            packet.CoARequest: (packet.CoAACK, packet.CoANAK)}


def _exchange(code: int, address: str, port: int, secret: str, attributes: dict, timeout: float, retries: int,
              source: str | None) -> DisconnectResult:
    user_name = attributes.get("User-Name")
    what = _NAMES[code]
    if not user_name:
        raise ValueError(f"a {what} needs a User-Name")
    if retries < 0 or timeout <= 0:
        raise ValueError("retries must be >= 0 and timeout > 0")
    key = secret.encode() if isinstance(secret, str) else secret
    # pyrad's retries is the total number of sends
    client = Client(server=address, coaport=port, secret=key, dict=_dictionary(),
                    retries=retries + 1, timeout=timeout)
    request = client.CreateCoAPacket(code=code, id=secrets.randbelow(256), message_authenticator=True)
    for name, value in attributes.items():
        if value is not None and value != "":
            request[name] = value
    where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    try:
        if source:
            client.bind((source, 0))
        reply = client.SendPacket(request)
    except Timeout:
        raise RouterUnavailable(f"{where}: no valid reply to {retries + 1} {what}(s) within "
                             f"{timeout:g} s each (NAS down, CoA port closed, wrong secret or source "
                             f"not allowed)") from None
    except OSError as exc:
        raise RouterUnavailable(f"{where}: {exc.strerror or exc}" + (f" (from {source})" if source else "")) from exc
    finally:
        client._CloseSocket()  # pyrad keeps the socket open for reuse; we never reuse a client
    ack, nak = _ANSWERS[code]
    if reply.code not in (ack, nak):
        raise RouterUnavailable(f"{where}: answered a {what} with packet code {reply.code}")
    result = DisconnectResult(acked=reply.code == ack, code=reply.code, error_cause=_error_cause(reply))
    log.info("%s for %s at %s: %s%s", what, user_name, where, "ACK" if result.acked else "NAK",
             f" Error-Cause {result.error_cause}" if result.error_cause is not None else "")
    return result


def _error_cause(reply: packet.Packet) -> int | None:
    # read the raw value: by name pyrad would give the VALUE's name, not the number
    raw = reply.get(ERROR_CAUSE)
    if not raw or len(raw[0]) != 4:
        return None
    return int.from_bytes(raw[0], "big")


class CoaCutter:
    """The :class:`hotspotd.disconnects.Cutter` of a NAS cut off by Disconnect-Request; its
    :meth:`change` (CoA-Request) gives a live session new limits (the owner's "extend").

    The NAS names the session by the User-Name it sent in accounting; without accounting the MAC
    in CoovaChilli's form (``AA-BB-CC-DD-EE-FF``) is what ``macauth`` uses.

    - A session whose accounting Stop is recorded needs no cut: chilli ends sessions itself at
      Session-Timeout and at the data cap, usually before our expiry job; nothing is sent.
    - CoovaChilli: ACK or "no such session" (NAK 503) mean the device is gone. A NAK without
      Error-Cause is chilli's "no such session" too, so it counts as gone unless accounting shows the
      session open.
    - MikroTik: which attributes RouterOS matches a Disconnect on, and the Error-Cause of its NAK,
      are not documented (shared/reference/routers.md, "MikroTik as public evidence shows it"), so
      a NAK proves nothing. With ``is_online`` (the router's API: ``/ip/hotspot/active``) the answer
      is read back after every request; without, only an ACK (or a Stop in accounting) counts, and
      a NAK leaves the cut to be retried and, after a few, shown to the owner.
    """

    def __init__(self, name: str, address: str, port: int, secret: str, *, timeout: float = 2.0, retries: int = 2,
                 source: str | None = None, kind: str = "coova", is_online: Callable[[str], bool] | None = None):
        self.name, self.address, self.port, self.secret = name, address, port, secret
        self.timeout, self.retries, self.source = timeout, retries, source
        #: the router's own MAC notation: CoovaChilli ``AA-BB-…`` (its User-Name for MAC auth and its
        #: Calling-Station-Id), MikroTik ``AA:BB:…`` in capitals (its Calling-Station-Id;
        #: shared/reference/routers.md)
        self.kind = kind
        #: MikroTik with API credentials: whether a MAC still has an active hotspot session
        self.is_online = is_online

    def cut(self, target: Target) -> bool:
        if target.accounting == "stopped":
            log.info("no Disconnect-Request for %s at %s: its accounting Stop is recorded", target.mac, self.name)
            return True
        # the session as accounting names it: MikroTik finds it best by Acct-Session-Id and Framed-IP-Address
        result = send_disconnect(self.address, self.port, self.secret, user_name=self._user(target),
                                 calling_station_id=self._mac(target),
                                 acct_session_id=target.acct_session_id, framed_ip=target.ip,
                                 timeout=self.timeout, retries=self.retries, source=self.source)
        if self.kind != "mikrotik":
            return result.gone or (result.bare_nak and target.accounting != "open")
        if self.is_online is None:
            if not result.acked:
                log.info("Disconnect-NAK for %s from %s: not taken as gone (RouterOS's NAK is undocumented); "
                         "retried until an ACK or a Stop in accounting", target.mac, self.name)
            return result.acked
        try:
            return not self.is_online(target.mac)
        except RouterError as exc:          # a refused API login or command: for the queue, not asked
            raise RouterUnavailable(str(exc)) from exc

    def change(self, target: Target, attributes: dict) -> bool:
        """Apply ``attributes`` to ``target``'s live session (CoA-Request): True on CoA-ACK."""
        return send_coa(self.address, self.port, self.secret, user_name=self._user(target), attributes=attributes,
                        acct_session_id=target.acct_session_id, calling_station_id=self._mac(target),
                        framed_ip=target.ip, timeout=self.timeout, retries=self.retries, source=self.source).acked

    def _mac(self, target: Target) -> str:
        mac = target.mac.upper()
        return mac if self.kind == "mikrotik" else mac.replace(":", "-")

    def _user(self, target: Target) -> str:
        """The User-Name the router used (accounting's), else its MAC-login form of the MAC."""
        return target.username or self._mac(target)
