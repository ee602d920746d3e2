"""Asking a RADIUS server as a NAS would: the simulated venue router's logins and health checks."""
from __future__ import annotations

import logging

from pyrad import packet
from pyrad.client import Client, Timeout

from radius.server import load_dictionary

log = logging.getLogger(__name__)
_DICTIONARY = None


def ask(address: tuple[str, int], secret: str, user: str, password: str, mac: str, ip: str | None = None,
        timeout: float = 2.0) -> float | None:
    """One PAP Access-Request (with Message-Authenticator) for ``user`` on device ``mac``.

    Returns the Session-Timeout of an Access-Accept (0 when it sets none), None for a reject.
    Raises :class:`pyrad.client.Timeout` when the server does not answer.
    """
    global _DICTIONARY
    if _DICTIONARY is None:
        _DICTIONARY = load_dictionary()
    client = Client(server=address[0], authport=address[1], secret=secret.encode(), dict=_DICTIONARY,
                    retries=2, timeout=timeout, enforce_ma=True)
    try:
        req = client.CreateAuthPacket(code=packet.AccessRequest, message_authenticator=True)
        req["User-Name"] = user
        req["User-Password"] = req.PwCrypt(password)
        req["Calling-Station-Id"] = mac
        req["NAS-Identifier"] = "hotspotd-sim"
        req["NAS-Port-Type"] = 19
        if ip:
            req["Framed-IP-Address"] = ip
        reply = client.SendPacket(req)
    finally:
        sock = getattr(client, "_socket", None)
        if sock is not None:
            sock.close()
            client._socket = None
    if reply.code != packet.AccessAccept:
        return None
    values = reply.get("Session-Timeout") if "Session-Timeout" in reply else None
    return float(values[0]) if values else 0.0


__all__ = ["ask", "Timeout"]
