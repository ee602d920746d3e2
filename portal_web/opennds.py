"""openNDS's FAS endpoint, ``/opennds/<gateway>/`` (the gateway's ``faspath``).

``GET``: the client openNDS redirected here. Its ``fas``/``iv`` query is decoded by the core
(:func:`hotspotd.routers.opennds.parse_redirect`); a device with time left is let in again (level 3:
queued for authmon; level 1: sent to the gateway's authdir), anyone else goes to the splash page
with the router's variables (``mac``, ``ip``, ``nasid``), where paying, a voucher or a receipt
admits it. ``POST``: authmon and hotspotd's deauth agent (level 3), answered in plain text.
"""
from __future__ import annotations

import logging

from flask import Blueprint, abort, make_response, redirect, request, url_for

from hotspotd import access
from hotspotd.routers.opennds import InvalidRedirect, parse_redirect

from .running import hotspot as _hotspot

log = logging.getLogger(__name__)
bp = Blueprint("opennds", __name__, url_prefix="/opennds")


def _gateway(name: str):
    gateway = _hotspot().opennds.by_name.get(name)
    if gateway is None:
        abort(404)
    return gateway


@bp.get("/<name>/")
def redirected(name: str):
    gateway = _gateway(name)
    try:
        visit = parse_redirect(request.query_string.decode("latin-1"), gateway.faskey, gateway.level)
    except InvalidRedirect as exc:
        log.info("opennds %s: unreadable redirect (%s)", name, exc)
        abort(400)
    if visit.gatewayname != gateway.name:
        abort(400)
    gateways = _hotspot().opennds
    gateways.seen(visit.clientmac, gateway.name)
    if gateway.level == 1 and access.authorize(visit.clientmac, site=gateway.site) is not None:
        return redirect(gateway.auth_url(visit, visit.originurl or f"http://{visit.gatewayaddress}/"), 302)
    ctx = {"mac": visit.clientmac, "ip": visit.clientip, "nasid": gateway.name}
    if visit.originurl.startswith(("http://", "https://")):
        ctx["userurl"] = visit.originurl
    return redirect(url_for("splash.index", **ctx), 303)


@bp.post("/<name>/")
def gateway_post(name: str):
    gateway = _gateway(name)
    if request.form.get("gatewayhash") != gateway.hash:
        abort(403)
    answer = _hotspot().opennds.answer(request.form)
    if answer is None:
        abort(403)
    resp = make_response(answer + "\n", 200)
    resp.headers["Content-Type"] = "text/plain; charset=utf-8"
    resp.headers["Cache-Control"] = "no-store"
    return resp
