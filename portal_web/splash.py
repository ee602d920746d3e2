"""The splash page: packages → phone → "check your phone" → online, or what went wrong.

Works without JavaScript (forms and a self-refreshing status page); ``static/portal.js`` only
makes the waiting smoother. The router's variables (``mac``, ``ip``, ``link-login-only``, …)
ride along in every link and form, so whichever page ends the flow can log the device in.
"""
from __future__ import annotations

from flask import Blueprint, abort, make_response, redirect, render_template, request, url_for

from hotspotd import access, clock, formatting, router_login, vouchers
from hotspotd.config import Site
from hotspotd.errors import DomainError
from hotspotd.identifiers import InvalidMac, is_random_mac, normalize_mac, normalize_phone
from hotspotd.payments import on_sale

from . import i18n, limiter
from .running import hotspot as _hotspot
from .i18n import N_
from .api import STATUS_OF, payment_status_json, router_login_form

bp = Blueprint("splash", __name__)

#: The splash page's one table of refusals: a code of the core (hotspotd.errors.DomainError) →
#: the page's HTTP status; any other code is a 400 (the form again, with what to correct).
STATUS_OF_REFUSAL = {"mpesa_unavailable": 502, "mpesa_busy": 503, "cannot_record": 503, "storage_busy": 503}

#: the headings of the online page
ONLINE = N_("You are online")
WELCOME_BACK = N_("Welcome back, you still have time")
#: the router refused the login it was sent (CoovaChilli's res=failed, with its Reply-Message)
REFUSED_WITH_TIME = N_("The Wi-Fi did not let this device in (it says: %(reply)s). Press \"Connect now\" to try "
                       "again; if it keeps failing, please tell the staff.")
REFUSED_NO_TIME = N_("The Wi-Fi did not let this device in (it says: %(reply)s). Choose a package to buy time, or "
                     "use \"Already paid?\" if you have paid.")
MOVED = N_("Your time is now on this device.")
VOUCHER_OK = N_("Voucher accepted.")


def _refused(template: str, exc: DomainError, **values):
    """The form ``template`` again, saying why (in the page's language) through :data:`STATUS_OF_REFUSAL`."""
    return _render(template, STATUS_OF_REFUSAL.get(exc.code, 400), error=i18n.refusal(exc, i18n.lang()),
                   error_field=exc.field, **values)


def _router_context() -> dict:
    return router_login.router_context(request.values)


def _mac(ctx: dict) -> str | None:
    try:
        return normalize_mac(ctx["mac"]) if ctx.get("mac") else None
    except InvalidMac:
        return None


def _site(ctx: dict) -> Site:
    """The venue of this request (see :meth:`hotspotd.venues.Venues.site_for`); a venue this
    install does not have ends the request with a page that says so (nothing is sold there)."""
    site = _hotspot().venues.site_for(ctx)
    if site is None:
        abort(_render("message.html", 400, ctx=ctx, message=i18n.t(i18n.REFUSALS["unknown_site"], i18n.lang())))
    return site


def _render(template: str, status: int = 200, **values):
    """Render with what every splash template needs (the venue's name and colour); remember an
    explicit language choice."""
    lang = i18n.lang()
    ctx = values.pop("ctx", None)
    ctx = _router_context() if ctx is None else ctx
    mac = _mac(ctx)
    site = _hotspot().venues.site_for(ctx) or _hotspot().config.site(None)
    body = render_template(template, lang=lang, ctx=ctx, site=site.name, accent=site.color,
                           multi_site=_hotspot().config.multi_site,
                           fmt=formatting,
                           random_mac=bool(mac and is_random_mac(mac)), **values)
    resp = make_response(body, status)
    if request.args.get("lang") in i18n.LANGS:
        resp.set_cookie("lang", request.args["lang"], max_age=365 * 86400, samesite="Lax", httponly=True)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _packages(site: Site):
    return on_sale(site.id)


def _online_page(grant_or_ent, form: router_login.LoginForm | None, title: str, note: str | None = None,
                 ctx: dict | None = None, refused: str | None = None):
    """``title``, ``note``: message ids (:data:`ONLINE`, :data:`MOVED`, ...)."""
    if isinstance(grant_or_ent, access.Grant):
        seconds, data_left, until = grant_or_ent.remaining_seconds, grant_or_ent.bytes_left, grant_or_ent.expires_at
        package = grant_or_ent.package_name
    else:
        ent = grant_or_ent
        seconds, until = access.remaining_seconds(ent), ent.expires_at
        data_left = access.bytes_left(ent)
        package = ent.package.name
    return _render("online.html", ctx=ctx, title=title, note=note, package=package,
                   seconds=seconds, data_left=data_left, until=clock.local(until).strftime("%H:%M"), login=form,
                   refused=refused)


@bp.errorhandler(429)
def too_many(exc):
    return _render("message.html", 429, message=i18n.t(N_("Too many tries. Wait a minute and try again."), i18n.lang()))


@bp.get("/")
def index():
    ctx = _router_context()
    site = _site(ctx)
    mac = _mac(ctx)
    grant = access.authorize(mac, site=site.id) if mac else None
    res, lang = ctx.get("res"), i18n.lang()
    reply = ctx.get("reply") or ctx.get("error") or i18n.t(N_("no reason given"), lang)
    if grant is not None:
        if res in ("success", "already"):
            # the router (CoovaChilli) says this device is logged in: no second logon from this page
            return _online_page(grant, None, ONLINE, ctx=ctx)
        # a returning device with time left: straight back online, by MAC (the router checks the
        # MAC it sees against the one in the login, so a typed-in MAC borrows nobody's time)
        form = router_login.login_form(ctx, mac, "", _hotspot().venues.uamsecret_for(ctx))
        _hotspot().opennds.admit(mac, site.id)
        refused = i18n.t(REFUSED_WITH_TIME, lang, reply=reply) if res == "failed" else None
        return _online_page(grant, form, WELCOME_BACK, ctx=ctx, refused=refused)
    error = i18n.t(REFUSED_NO_TIME, lang, reply=reply) if res == "failed" else None
    return _render("splash.html", packages=_packages(site), error=error, error_field=None, phone="")


@bp.post("/pay")
def pay():
    hotspot = _hotspot()
    ctx = _router_context()
    site = _site(ctx)
    lang = i18n.lang()
    try:
        payment, _ = hotspot.payments.initiate(request.form.get("phone", ""), request.form.get("package"),
                                               _mac(ctx), client_ip=request.remote_addr, login_context=ctx or None,
                                               site=site.id)
    except DomainError as exc:      # PaymentRefused
        return _refused("splash.html", exc, packages=_packages(site), phone=request.form.get("phone", "")[:20])
    return redirect(url_for("splash.wait", checkout_request_id=payment.checkout_request_id, lang=lang, **ctx), 303)


@bp.get("/wait/<checkout_request_id>")
def wait(checkout_request_id: str):
    hotspot = _hotspot()
    payment = hotspot.payments.status(checkout_request_id[:64])
    if payment is None:
        return redirect(url_for("splash.index", **_router_context()), 303)
    lang = i18n.lang()
    status = STATUS_OF[payment.status]
    if status == "success":
        ent = access.entitlement_of(payment)
        if ent is not None:
            return _online_page(ent, router_login_form(payment, _mac(_router_context())), ONLINE)
    s = payment_status_json(payment, lang)
    if status == "pending":
        lifetime = hotspot.config.mpesa.prompt_lifetime_seconds
        left = int(max(lifetime - (clock.now() - (payment.pushed_at or payment.created_at)), 0))
        return _render("wait.html", s=s, seconds_left=left, checkout_request_id=payment.checkout_request_id)
    others = None
    if s.get("reason") == "rule_limited":
        # M-Pesa takes the same amount from this phone again only after about 2 minutes (rule 17):
        # offer at once what it takes now, the packages of another price
        others = [p for p in on_sale(payment.site) if p.price != payment.amount]
    return _render("failed.html", s=s, others=others)


@bp.route("/paid", methods=["GET", "POST"])
@limiter.limit(lambda: _hotspot().config.portal.redeem_limit_per_client, methods=["POST"])
def already_paid():
    ctx = _router_context()
    site = _site(ctx)
    if request.method == "GET":
        return _render("paid.html", error=None, receipt="", phone="")
    receipt = access.normalize_receipt(request.form.get("receipt", ""))
    phone_text = request.form.get("phone", "")[:20]
    mac = _mac(ctx)
    try:
        if mac is None:
            raise access.AccessError("no_device")
        phone = normalize_phone(phone_text)
        ent, unbound = access.move_to_device(receipt, phone, mac, site=site.id)
    except DomainError as exc:      # InvalidPhone, AccessError
        return _refused("paid.html", exc, receipt=receipt, phone=phone_text)
    _hotspot().cut_off(unbound, ent.id, "moved")
    _hotspot().opennds.admit(mac, site.id)
    form = router_login.login_form(ctx, ent.login_user, ent.login_password,
                                   _hotspot().venues.uamsecret_for(ctx))
    return _online_page(ent, form, ONLINE, MOVED, ctx=ctx)


@bp.route("/voucher", methods=["GET", "POST"])
@limiter.limit(lambda: _hotspot().config.portal.redeem_limit_per_client, methods=["POST"])
def voucher():
    ctx = _router_context()
    site = _site(ctx)
    if request.method == "GET":
        return _render("voucher.html", error=None, code="")
    code = request.form.get("code", "")[:32]
    try:
        ent = vouchers.redeem(code, _mac(ctx), site=site.id)
    except vouchers.VoucherError as exc:
        return _refused("voucher.html", exc, code=code)
    _hotspot().opennds.admit(_mac(ctx), site.id)
    form = router_login.login_form(ctx, ent.login_user, ent.login_password,
                                   _hotspot().venues.uamsecret_for(ctx))
    return _online_page(ent, form, ONLINE, VOUCHER_OK, ctx=ctx)
