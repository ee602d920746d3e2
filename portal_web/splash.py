"""The splash page: packages → phone → "check your phone" → success or a reason. Works without JavaScript."""
from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from hotspotd.identifiers import InvalidMac, normalize_mac
from hotspotd.models import Package
from hotspotd.payments import PaymentRefused

from .api import _lang, payment_status_json, router_login_form

bp = Blueprint("splash", __name__)
ROUTER_VARS = ("mac", "ip", "link-login-only", "link-orig", "chap-id", "chap-challenge",
               "uamip", "uamport", "challenge", "userurl", "nasid")


def _router_context() -> dict:
    source = request.values
    return {k: source[k][:512] for k in ROUTER_VARS if source.get(k)}


@bp.get("/")
def index():
    hotspot = current_app.config["HOTSPOT"]
    ctx = _router_context()
    packages = Package.select().where(Package.active).order_by(Package.position, Package.price)
    return render_template("splash.html", packages=packages, ctx=ctx, lang=_lang(),
                           site=hotspot.config.portal.site_name, error=None, phone="")


@bp.post("/pay")
def pay():
    hotspot = current_app.config["HOTSPOT"]
    ctx = _router_context()
    mac = ctx.get("mac")
    try:
        mac = normalize_mac(mac) if mac else None
    except InvalidMac:
        mac = None
    try:
        payment, _ = hotspot.payments.initiate(request.form.get("phone", ""), request.form.get("package"),
                                               mac, client_ip=request.remote_addr, login_context=ctx or None)
    except PaymentRefused as exc:
        packages = Package.select().where(Package.active).order_by(Package.position, Package.price)
        return render_template("splash.html", packages=packages, ctx=ctx, lang=_lang(), error=str(exc),
                               site=hotspot.config.portal.site_name, phone=request.form.get("phone", "")), exc.status
    return redirect(url_for("splash.wait", checkout_request_id=payment.checkout_request_id, lang=_lang()), 303)


@bp.get("/wait/<checkout_request_id>")
def wait(checkout_request_id: str):
    hotspot = current_app.config["HOTSPOT"]
    payment = hotspot.payments.status(checkout_request_id[:64])
    if payment is None:
        return redirect(url_for("splash.index"), 303)
    return render_template("wait.html", s=payment_status_json(payment, _lang()), lang=_lang(),
                           site=hotspot.config.portal.site_name, login=router_login_form(payment))
