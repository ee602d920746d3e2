"""The splash page: packages → phone → "check your phone" → online, or what went wrong.

Works without JavaScript (forms and a self-refreshing status page); ``static/portal.js`` only
makes the waiting smoother. The router's variables (``mac``, ``ip``, ``link-login-only``, …)
ride along in every link and form, so whichever page ends the flow can log the device in.
"""
from __future__ import annotations


from flask import Blueprint, abort, current_app, make_response, redirect, render_template, request, url_for

from hotspotd import access, c2b, clock, formatting, router_login, vouchers
from hotspotd.config import Site
from hotspotd.daraja import codes
from hotspotd.errors import DomainError
from hotspotd.identifiers import InvalidMac, is_random_mac, mask_phone, normalize_mac, normalize_phone
from hotspotd.payments import on_sale
from hotspotd.storage.models import Entitlement, Event, Payment

from . import i18n, limiter
from .running import hotspot as _hotspot
from .i18n import N_
from .api import STATUS_OF, asked_by_payer, payment_status_json, router_login_form

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
#: the same, when the page has no login to offer again (it was opened without the router's login address)
REFUSED_NO_BUTTON = N_("The Wi-Fi did not let this device in (it says: %(reply)s). Your time is safe. Turn Wi-Fi off "
                       "and on, then open any website to get the Wi-Fi's login page again; if it keeps failing, "
                       "please tell the staff.")
REFUSED_NO_TIME = N_("The Wi-Fi did not let this device in (it says: %(reply)s). Choose a package to buy time, or "
                     "use \"Already paid?\" if you have paid.")
#: the heading when the router refused this device's login although it has time
PAID_TIME = N_("You have paid time on this device")
MOVED = N_("Your time is now on this device.")
STARTS_NOW = N_("Your paid time starts now, on this device.")
ENDED = N_("Your %(package)s ended at %(time)s.")
#: Daraja's rule 17: the same amount from the same number only about 2 minutes after the last prompt
SAME_AGAIN_FROM = N_("M-Pesa takes the same amount from this number again from %(time)s (2 minutes after the "
                     "last prompt). Choose another package now, or send this one again then.")
VOUCHER_OK = N_("Voucher accepted.")
CONFIRMED_BY_MPESA = N_("M-Pesa confirmed your payment. Your time is on this device.")


def _recently(name: str, window: float) -> router_login.RecentlyTried:
    """This app's memory of devices recently sent to the router (``auto_login``: the page submits
    a device's login by itself once in two minutes, never again, so a router that keeps refusing
    cannot make it loop; ``refusal``: a refusal is written down for the owner once in five)."""
    key = f"hotspotd.{name}"
    memory = current_app.extensions.get(key)
    return memory if memory is not None else current_app.extensions.setdefault(key, router_login.RecentlyTried(window))


def _record_refusal(mac: str | None, entitlement_id: int | None, words: str, site: Site) -> None:
    """Tell the owner (the payment's timeline, the health page) that the router refused a device."""
    if mac is None or not _recently("refusal", 300.0).first(mac, clock.now()):
        return
    Event.create(at=clock.now(), kind="router_login_refused", entitlement=entitlement_id, mac=mac,
                 message=f"the router refused the login{'' if site.id == 'default' else ' at ' + site.id}: {words}")


def _claim_held(ctx: dict, mac: str, site: Site):
    """A purchase held for a device (bought with no router variables) claimed by the device that
    paid, now back through the router: recognised by its address, only where that address is the
    device's own (the router names the same ``ip``, and it is no router's NAT address)."""
    address = request.remote_addr
    if not address or ctx.get("ip") != address or address in _hotspot().venues.nat_addresses:
        return None
    return access.claim_held(address, mac, site.id)


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
    if template in MENU_PAGES:
        values.setdefault("menu", _menu(mac, site))
    body = render_template(template, lang=lang, ctx=ctx, site=site.name, accent=site.color,
                           multi_site=_hotspot().config.multi_site,
                           fmt=formatting,
                           random_mac=bool(mac and is_random_mac(mac)), **values)
    resp = make_response(body, status)
    if request.args.get("lang") in i18n.LANGS:
        resp.set_cookie("lang", request.args["lang"], max_age=365 * 86400, samesite="Lax", httponly=True)
    resp.headers["Cache-Control"] = "no-store"
    return resp


#: the pages that say how to pay from the M-Pesa menu when no prompt comes
MENU_PAGES = ("splash.html", "wait.html", "failed.html")


def _menu(mac: str | None, site: Site) -> dict | None:
    """Paying from the M-Pesa menu (C2B): the paybill and this device's account code, or the till;
    None for a paybill where the device is unknown (no code to give it)."""
    prices = sorted({p.price for p in on_sale(site.id)})
    menu = c2b.manual_payment(_hotspot().config.payee(site.id), mac, site.id) if prices else None
    if menu is None:
        return None
    return {**menu, "prices": ", ".join(formatting.money(p, i18n.lang()) for p in prices)}


def _packages(site: Site):
    return list(on_sale(site.id))


def _splash(status: int = 200, *, site: Site, chosen: str = "", **values):
    """The packages page: ``chosen`` (a package id) stays checked through errors and "Try again";
    one no longer on sale, or none, checks the first."""
    packages = _packages(site)
    ids = [str(p.id) for p in packages]
    payee = _hotspot().config.payee(site.id)
    return _render("splash.html", status, packages=packages, chosen=chosen if chosen in ids else (ids or [""])[0],
                   payee=i18n.payee(payee, i18n.lang()), help_phone=payee.help_phone, **values)


def _online_page(grant_or_ent, form: router_login.LoginForm | None, title: str, note: str | None = None,
                 ctx: dict | None = None, refused: str | None = None, receipt: str | None = None):
    """``title``, ``note``: message ids (:data:`ONLINE`, :data:`MOVED`, ...)."""
    lang = i18n.lang()
    if isinstance(grant_or_ent, access.Grant):
        seconds, data_left, until = grant_or_ent.remaining_seconds, grant_or_ent.bytes_left, grant_or_ent.expires_at
        package = _package_name(Entitlement.get_by_id(grant_or_ent.entitlement_id), lang)
    else:
        ent = grant_or_ent
        seconds, until = access.remaining_seconds(ent), ent.expires_at
        data_left = access.bytes_left(ent)
        package = _package_name(ent, lang)
    device = _mac(ctx if ctx is not None else _router_context())
    key = device or (form.fields.get("username", "") if form else "")
    # the page submits the login itself once; after a refusal, or a second time, it is the customer's tap
    auto = form is not None and refused is None and _recently("auto_login", 120.0).first(key, clock.now())
    return _render("online.html", ctx=ctx, title=title, note=note, package=package,
                   seconds=seconds, data_left=data_left, until=clock.local(until).strftime("%H:%M"), login=form,
                   refused=refused, auto_login=auto, receipt=receipt)


@bp.errorhandler(429)
def too_many(exc):
    return _render("message.html", 429, message=i18n.t(N_("Too many tries. Wait a minute and try again."), i18n.lang()))


@bp.get("/")
def index():
    ctx = _router_context()
    site = _site(ctx)
    mac = _mac(ctx)
    # "buy more" (from /me): the packages, even for a device that still has time (purchases stack)
    grant = access.authorize(mac, site=site.id) if mac and request.args.get("buy") != "1" else None
    res, lang = ctx.get("res"), i18n.lang()
    # the router sent the browser back with its reason (MikroTik $(error), CoovaChilli res=failed)
    words = router_login.refusal(ctx)
    if words == "":
        words = i18n.t(N_("no reason given"), lang)
    if grant is not None:
        if res in ("success", "already"):
            # the router (CoovaChilli) says this device is logged in: no second logon from this page
            return _online_page(grant, None, ONLINE, ctx=ctx)
        # a returning device with time left: straight back online, by MAC (the router checks the
        # MAC it sees against the one in the login, so a typed-in MAC borrows nobody's time)
        form = router_login.login_form(ctx, mac, "", _hotspot().venues.uamsecret_for(ctx))
        _hotspot().opennds.admit(mac, site.id)
        if words:
            _record_refusal(mac, grant.entitlement_id, words, site)
            refused = i18n.t(REFUSED_WITH_TIME if form else REFUSED_NO_BUTTON, lang, reply=words)
            return _online_page(grant, form, PAID_TIME, ctx=ctx, refused=refused)
        return _online_page(grant, form, WELCOME_BACK, ctx=ctx)
    if words:
        _record_refusal(mac, None, words, site)
    elif mac and (claimed := _claim_held(ctx, mac, site)) is not None:
        # paid earlier from this very device without the router's variables: its time starts now
        form = router_login.login_form(ctx, claimed.login_user, claimed.login_password,
                                       _hotspot().venues.uamsecret_for(ctx))
        _hotspot().opennds.admit(mac, site.id)
        return _online_page(claimed, form, ONLINE, STARTS_NOW, ctx=ctx)
    error = i18n.t(REFUSED_NO_TIME, lang, reply=words) if words else None
    chosen, phone = _retry_values(ctx)
    return _splash(site=site, error=error, error_field=None, phone=phone, chosen=chosen,
                   ended=_ended_notice(mac, site, lang) if mac and not words else None)


def _ended_notice(mac: str, site: Site, lang: str) -> str | None:
    """"Your 1 hour ended at 21:37." for a device back after its time or data ran out."""
    ent = access.last_ended(mac, site.id)
    if ent is None:
        return None
    return i18n.t(ENDED, lang, package=_package_name(ent, lang), time=clock.local(ent.ended_at).strftime("%H:%M"))


def _package_name(ent, lang: str) -> str:
    """The name of the package ``ent`` was bought with, in the page's language."""
    return formatting.package_name(ent.package, lang)


@bp.get("/me")
def me():
    """"My time": the device's time and data left, its M-Pesa code and "buy more", at a fixed
    address; the device is known by the router's variables, else by its own address (never a
    router's NAT address, which many devices share)."""
    ctx = _router_context()
    site = _site(ctx)
    lang = i18n.lang()
    mac = _mac(ctx)
    address = request.remote_addr
    if mac is None and address and address not in _hotspot().venues.nat_addresses:
        mac = access.device_at(address)
    if mac is None:
        return _render("me.html", ctx=ctx, known=False)
    buy = {**ctx, "buy": "1"}
    grant = access.authorize(mac, site=site.id)
    if grant is None:
        return _render("me.html", ctx=ctx, known=True, grant=None, buy=buy, ended=_ended_notice(mac, site, lang))
    ent = Entitlement.get_by_id(grant.entitlement_id)
    payment = Payment.get_or_none(Payment.id == ent.payment_id) if ent.payment_id else None
    return _render("me.html", ctx=ctx, known=True, grant=grant, buy=buy, package=_package_name(ent, lang),
                   seconds=grant.remaining_seconds, data_left=grant.bytes_left,
                   until=clock.local(grant.expires_at).strftime("%H:%M"),
                   receipt=payment.receipt if payment is not None else None,
                   ending_soon=grant.remaining_seconds <= 600)


def _retry_values(ctx: dict) -> tuple[str, str]:
    """The package and phone a "Try again" brings back (``retry=<CheckoutRequestID>``, and
    ``package`` when the customer picks one): the phone only to the device that paid, never to
    whoever learns the id."""
    chosen = request.args.get("package", "")[:12]
    retry = request.args.get("retry", "")[:64]
    payment = _hotspot().payments.status(retry) if retry else None
    if payment is None or not _asked_by_payer(payment, ctx):
        return chosen, ""
    return chosen or str(payment.package_id), formatting.phone_local(payment.phone)


def _asked_by_payer(payment, ctx: dict) -> bool:
    """Whether this request comes from the device that made ``payment`` (:func:`api.asked_by_payer`)."""
    return asked_by_payer(payment, request.remote_addr, ctx.get("mac"), _hotspot())


@bp.post("/pay")
def pay():
    hotspot = _hotspot()
    ctx = _router_context()
    site = _site(ctx)
    lang = i18n.lang()
    try:
        payment, _ = hotspot.payments.initiate(request.form.get("phone", ""), request.form.get("package"),
                                               _mac(ctx), client_ip=request.remote_addr, login_context=ctx or None,
                                               site=site.id, lang=lang)
    except DomainError as exc:      # PaymentRefused
        return _splash(STATUS_OF_REFUSAL.get(exc.code, 400), site=site, error=i18n.refusal(exc, lang),
                       error_field=exc.field, phone=request.form.get("phone", "")[:20],
                       chosen=request.form.get("package", "")[:12])
    return redirect(url_for("splash.wait", checkout_request_id=payment.checkout_request_id, lang=lang, **ctx), 303)


@bp.get("/wait/<checkout_request_id>")
def wait(checkout_request_id: str):
    hotspot = _hotspot()
    ctx = _router_context()
    payment = hotspot.payments.status(checkout_request_id[:64])
    if payment is None:
        return redirect(url_for("splash.index", **ctx), 303)
    lang = i18n.lang()
    status = STATUS_OF[payment.status]
    # the M-Pesa code and the phone (with them the time moves): only to the device that paid
    payer = _asked_by_payer(payment, ctx)
    if status == "success":
        ent = access.entitlement_of(payment)
        if ent is not None and ent.status == access.HELD:
            # paid, but no device known: say exactly how to get online, never "You are online"
            return _render("held.html", s=payment_status_json(payment, lang), package=_package_name(ent, lang),
                           receipt=payment.receipt if payer else None)
        if ent is not None:
            return _online_page(ent, router_login_form(payment, _mac(ctx)), ONLINE, ctx=ctx,
                                receipt=payment.receipt if payer else None)
    s = payment_status_json(payment, lang)
    # back to the packages, this one chosen and the number to correct ("Wrong number?", "Try again")
    again = {**ctx, "retry": payment.checkout_request_id, "package": payment.package_id}
    if status == "pending":
        lifetime = hotspot.config.mpesa.prompt_lifetime_seconds
        left = int(max(lifetime - (clock.now() - (payment.pushed_at or payment.created_at)), 0))
        payee = hotspot.config.payee(payment.site)
        return _render("wait.html", s=s, seconds_left=left, checkout_request_id=payment.checkout_request_id,
                       package=formatting.package_name(payment.package, lang),
                       payee=i18n.payee(payee, lang, formatting.money(payment.amount, lang)),
                       help_phone=payee.help_phone, change=again,
                       sent_to=formatting.phone_local(payment.phone) if payer else mask_phone(payment.phone))
    others, phone, resend, same_from = None, "", None, None
    same_again_at = (payment.pushed_at or payment.created_at) + codes.RULE_LIMIT_SECONDS
    if s.get("reason") == "rule_limited" or clock.now() < same_again_at:
        # M-Pesa takes the same amount from this phone again only after about 2 minutes (rule 17):
        # offer at once what it takes now, the packages of another price ("Try again" checks one),
        # and say when the same one can be sent again
        others = [p for p in on_sale(payment.site) if p.price != payment.amount]
        again["package"] = others[0].id if others else ""
        phone = formatting.phone_local(payment.phone) if payer else ""
        same_from = i18n.t(SAME_AGAIN_FROM, lang, time=clock.local(max(same_again_at, clock.now()))
                           .strftime("%H:%M:%S"))
    elif payer:
        # the rule's window is over: the device that paid may send the same prompt again at once
        resend = {"package": payment.package_id, "phone": formatting.phone_local(payment.phone)}
    return _render("failed.html", s=s, again=again, others=others, phone=phone, resend=resend, same_from=same_from)


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
        ent, unbound = _hotspot().c2b.already_paid(receipt, phone, mac, site.id)
    except DomainError as exc:      # InvalidPhone, AccessError
        if exc.code == "receipt_not_found" and _hotspot().lookups.worth_asking(receipt):
            # a code hotspotd never saw: M-Pesa is asked (Transaction Status); the answer comes in seconds
            row = _hotspot().lookups.ask(receipt, phone, mac, site.id)
            return redirect(url_for("splash.paid_check", lookup_id=row.id, lang=i18n.lang(), **ctx), 303)
        return _refused("paid.html", exc, receipt=receipt, phone=phone_text)
    _hotspot().cut_off(unbound, ent.id, "moved")
    _hotspot().opennds.admit(mac, site.id)
    form = router_login.login_form(ctx, ent.login_user, ent.login_password,
                                   _hotspot().venues.uamsecret_for(ctx))
    return _online_page(ent, form, ONLINE, MOVED, ctx=ctx)


@bp.get("/paid/check/<int:lookup_id>")
def paid_check(lookup_id: int):
    """The answer of M-Pesa's Transaction Status about a code "Already paid?" sent it."""
    ctx = _router_context()
    mac, lang = _mac(ctx), i18n.lang()
    row = _hotspot().lookups.status(lookup_id)
    if row is None or row.mac != mac:
        return redirect(url_for("splash.already_paid", lang=lang, **ctx), 303)
    if row.state == "asking":
        return _render("checking.html", receipt=row.receipt)
    if row.state == "granted":
        ent = Entitlement.get(Entitlement.payment == row.payment_id)
        _hotspot().opennds.admit(mac, row.site)
        form = router_login.login_form(ctx, ent.login_user, ent.login_password, _hotspot().venues.uamsecret_for(ctx))
        return _online_page(ent, form, ONLINE, CONFIRMED_BY_MPESA, ctx=ctx, receipt=row.receipt)
    error = i18n.t(i18n.LOOKUP_REFUSALS.get(row.reason, i18n.LOOKUP_REFUSALS["unavailable"]), lang)
    return _render("paid.html", 404 if row.state == "refused" else 503, error=error, receipt=row.receipt,
                   phone=formatting.phone_local(row.phone))


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
