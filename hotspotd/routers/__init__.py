"""Routers: talking to the NAS that lets paid devices out (:mod:`.mikrotik` over the RouterOS API;
RFC 5176 Disconnect in :mod:`radius.disconnect`) and logging paid devices in (:mod:`.logins`).

Every way of talking to a router fails with one of two exceptions, each naming the router."""


class RouterUnavailable(Exception):
    """The router could not be asked: unreachable, timed out, closed the connection, or no valid
    answer (a NAS drops a Disconnect-Request with the wrong secret silently). It may work later."""


class RouterError(Exception):
    """The router refused the operation (a RouterOS ``!trap``: bad credentials, no such host, ...):
    retrying will not help."""
