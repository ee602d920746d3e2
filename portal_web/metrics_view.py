"""``GET /metrics``: the Hotspot's figures in the Prometheus text format, for the allowed networks only.

The figures are the owner's business (revenue, outcomes, devices online): a customer on the venue's
LAN reaches the same port, so any address outside ``[metrics] allow`` gets 403. Off (404) when
``[metrics] enabled = false``.

A reverse proxy on this box (the HTTPS one for Daraja's callbacks) makes its requests come from
127.0.0.1. Waitress drops the X-Forwarded-* headers it does not trust before we see them, so a request
that still shows another proxy's mark (:data:`PROXY_MARKS`) is refused too; a proxy that leaves
none must not forward ``/metrics`` (SECURITY.md).
"""
from __future__ import annotations

import ipaddress

from flask import Blueprint, Response, abort, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hotspotd.config import metrics_allowlist

from . import running

bp = Blueprint("metrics", __name__)
#: headers only a proxy adds (nginx's usual X-Real-IP, Apache's X-Forwarded-Server, Via, CDNs')
PROXY_MARKS = ("X-Real-IP", "X-Forwarded-Server", "Via", "CF-Connecting-IP", "True-Client-IP")


def _allowed(address: str | None, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:   # a dual-stack listener's view of IPv4
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


@bp.get("/metrics")
def metrics():
    hotspot = running.hotspot()
    if hotspot.metrics is None or not hotspot.config.metrics.enabled:
        abort(404)
    if not _allowed(request.remote_addr, metrics_allowlist(hotspot.config)) or any(
            mark in request.headers for mark in PROXY_MARKS):
        abort(403, "Not from this address.")
    return Response(generate_latest(hotspot.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST,
                                                                        "Cache-Control": "no-store"})
