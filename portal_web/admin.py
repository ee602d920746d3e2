"""The owner's dashboard at /admin: a thin web layer over :mod:`hotspotd.reports` and the core.

Every page works without JavaScript; every change is a POST carrying a CSRF token (Flask-WTF,
checked here only: the JSON API and the callbacks carry none). Accounts come from
``hotspotd admin create``; sessions are signed cookies (HttpOnly, SameSite=Lax, Secure when the
portal's public URL is https) that end after :data:`IDLE_SECONDS` without a request, or at once
when the account's password changes. With an https ``[portal] public_url`` the cookie is Secure:
the dashboard must then be opened over https too (a plain-http LAN address cannot sign in).
The signing key is random per install, kept in the Setting table (``flask_secret_key``).
Phones are masked on every page; the CSV export has them in full (see
:func:`hotspotd.reports.write_payments_csv`).

Venues (``[[sites]]``): every page that shows money, sessions, packages, vouchers or health takes
``?site=ID`` and then shows that venue only; when the install has more than the default venue, the
header offers a venue select (``form#site-filter``) and the lists a venue column. Links, forms and
the redirects after a change keep the ``site`` parameter. An account limited to some venues
(``admin_user.sites``, set by ``hotspotd admin create --sites`` / ``admin set-sites``) sees only
those: every figure and list is narrowed to them, its select offers only them, and ``?site=`` of
another venue, or the id of another venue's payment, session, package or voucher batch in a URL,
answers 404 and changes nothing. Packages (see :func:`package_editable`): a limited account sees
its venues' own packages and those sold at every venue, but changes (edit, enable/disable, move)
only its venues' own ones (403 for one sold at every venue: those are the owner's) and adds
packages only for its venues; only an account that sees every venue sets "sold at every venue" or
"roams". Vouchers: a limited account makes them only for its venues' own packages and sees only
their batches (vouchers carry no venue of their own, so a batch of a package sold at every venue
could have been made for any venue: those stay the owner's).

Routes::

    GET  /admin/login, POST /admin/login (rate limited), POST /admin/logout
    GET  /admin/                        overview (?period=today|7d|30d|month)
    GET  /admin/sessions                POST /admin/sessions/<id>/disconnect, /admin/sessions/<id>/extend
    GET  /admin/payments (?q, status, from, to, page)   GET /admin/payments.csv (same filters)
    GET  /admin/payments/<id>           POST /admin/payments/<id>/reconcile
    GET  /admin/packages                GET|POST /admin/packages/new, /admin/packages/<id>
                                        POST /admin/packages/<id>/active, /admin/packages/<id>/move
    GET  /admin/vouchers, POST /admin/vouchers, GET /admin/vouchers/sheet?batch=NAME,
    POST /admin/vouchers/sms (with [sms] on: one voucher sent to a phone)
    GET  /admin/health
    every page but the login also takes ?site=ID (one venue; see "Venues" above)

Hooks for browser tests (keep them stable):

* login form: ``form#login`` with ``name="username"``, ``name="password"``; errors in ``#login-error``
* every page: ``<body data-page="overview|sessions|payments|payment|packages|package|vouchers|sheet|health|login">``;
  flash messages ``.flash[data-flash="ok|error"]``; logout ``button[data-action="logout"]``
* overview: ``#online-count``, ``#active-count``, ``#revenue-today``, ``#revenue-month`` (each with
  ``data-value``, a plain integer); ``#funnel`` with ``data-sent``, ``data-paid``, ``data-online``;
  failure reasons ``#funnel-failures li[data-reason][data-count]``; ``<svg id="revenue-chart">`` with one
  ``<rect data-day="YYYY-MM-DD" data-amount="N">`` per day (30, oldest first, today last)
* sessions: ``<tr data-entitlement="ID" data-mac="MACS">`` (MACS: the session's devices, space
  separated, usually one; match with ``[data-mac~="AA:…"]``), ``data-online="yes|no"``; in it
  ``button[data-action="disconnect"]`` and ``form[data-action="extend"]`` with ``name="minutes"``
* payments: ``form#payment-search`` (``q``, ``status``, ``from``, ``to``), ``<tr data-payment="ID"
  data-status="…">``, ``a#csv-export``, ``#payments-total[data-value]``; a payment's page:
  ``#timeline li[data-kind]``, ``button[data-action="reconcile"]`` (only when an STK query can help)
* packages: ``<tr data-package="ID" data-active="yes|no">`` with ``button[data-action="up|down|disable|enable"]``;
  the form's inputs ``name``, ``price``, ``minutes``, ``data_mb``, ``rate``, ``devices``, errors
  ``.field-error[data-field="NAME"]``
* vouchers: ``form#voucher-generate`` (``package``, ``count``, ``batch``), ``form#voucher-sms``
  (``sms_package``, ``phone``, ``lang``), ``<tr data-batch="NAME">``;
  the sheet: ``.voucher[data-code="XXXXX-XXXXX"]``
* health: ``#health li[data-check="KEY"][data-state="ok|warn|fail|info"]`` (KEY: daraja, daraja:SITE for a
  venue with its own M-Pesa account, callback, router:NAME or routers, radius, scheduler, disconnects, clock)
* venues (installs with more than the default venue only): the header's ``form#site-filter`` with
  ``select[name="site"]`` (first option "" = every venue the account sees), or ``#site-only[data-site]``
  for an account limited to one venue; list cells ``td.venue[data-site="ID"]`` (payments, sessions);
  packages ``tr[data-site="ID|"]`` ("" = every venue), ``tr[data-readonly="yes"]`` for one the account
  cannot change, ``[data-roams="yes"]``; the package form's ``select[name="site"]`` and ``name="roams"``
"""
from __future__ import annotations

import dataclasses
import hmac
import io
import logging
import math
import secrets
from datetime import timedelta

from flask import (Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request,
                   session, url_for)
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from hotspotd import access, admins, catalogue, clock, formatting, reports, vouchers
from hotspotd.health import live as health_live
from hotspotd.identifiers import InvalidPhone, mask_phone, normalize_phone
from hotspotd.sms import outbox as sms_outbox
from hotspotd.storage.models import AdminUser, Entitlement, Package, Payment, Setting, Voucher, database

from . import csrf, i18n, limiter
from .running import hotspot as _hotspot

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__, url_prefix="/admin")

IDLE_SECONDS = 8 * 3600
LOGIN_LIMIT = "10/minute"
PER_PAGE = 50
SECRET_SETTING = "flask_secret_key"

#: Failure reasons (hotspotd.daraja.codes.REASONS words) as the owner reads them.
#: the dashboard's one table of the core's refusal codes (hotspotd.errors.DomainError) it can meet
REFUSAL_TEXT = {"extend_out_of_range": "extend by 1 second to a year", "not_live": "only a live session can be extended"}

REASON_TEXT = {
    "cancelled": "Cancelled on the phone", "wrong_pin": "Wrong PIN", "insufficient_funds": "Not enough balance",
    "no_response": "No response from the phone", "expired": "Prompt expired", "busy": "M-Pesa busy",
    "rule_limited": "Same amount again within 2 minutes (M-Pesa's rule)",
    "push_failed": "Prompt not sent", "misconfigured": "Till or paybill misconfigured", "failed": "Other failure",
}


# --- setup ----------------------------------------------------------------------------------
def secret_key() -> str:
    """This install's random session-signing key, made on first start and kept in the Setting
    table (a restart keeps owners signed in; two processes starting at once agree on one)."""
    with database.atomic():
        Setting.insert(key=SECRET_SETTING, value=secrets.token_hex(32)).on_conflict_ignore().execute()
    return Setting.get_by_id(SECRET_SETTING).value


def configure(app, hotspot) -> None:
    """Session and CSRF settings of the app (called by :func:`portal_web.create_app`)."""
    app.config.update(
        SECRET_KEY=secret_key(),
        SESSION_COOKIE_NAME="hotspotd_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Secure when owners reach the portal over https; a plain-http LAN install would never
        # get its cookie back otherwise
        SESSION_COOKIE_SECURE=hotspot.config.portal.public_url.lower().startswith("https://"),
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=IDLE_SECONDS),
        WTF_CSRF_TIME_LIMIT=IDLE_SECONDS,
    )


# --- who is signed in -----------------------------------------------------------------------
def _fingerprint(user: AdminUser) -> str:
    # ties the cookie to the current password: set-password signs every other browser out
    return hmac.new(current_app.secret_key.encode(), user.password_hash.encode(), "sha256").hexdigest()[:32]


def current_admin() -> AdminUser | None:
    """The signed-in account, or None (no session, idle too long, account gone, password changed)."""
    data = session.get("admin")
    if not isinstance(data, dict):
        return None
    now = clock.now()
    if now - float(data.get("seen", 0)) > IDLE_SECONDS:
        session.pop("admin", None)
        g.idle_expired = True
        return None
    user = AdminUser.get_or_none(AdminUser.id == data.get("id"))
    if user is None or not hmac.compare_digest(str(data.get("fp", "")), _fingerprint(user)):
        session.pop("admin", None)
        return None
    if now - float(data.get("seen", 0)) > 60:
        session["admin"] = {**data, "seen": now}
    return user


def _safe_next(target: str | None) -> str:
    # only our own pages: never an open redirect to another site
    if target and target.startswith("/admin") and "\\" not in target and "//" not in target:
        return target
    return url_for("admin.overview")


@bp.before_request
def guard():
    if request.endpoint == "admin.login":
        if request.method == "POST":
            csrf.protect()
        return None
    g.admin = current_admin()
    if g.admin is None:
        if g.get("idle_expired"):
            flash(f"Signed out after {IDLE_SECONDS // 3600} hours without activity.", "error")
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("admin.login", next=target), 303)
    if request.method == "POST":
        csrf.protect()
    g.venue = _chosen_venue()
    return None


@bp.after_request
def no_store(resp):
    resp.headers["Cache-Control"] = "no-store"
    # the CSRF check on https compares the Referer with our host: send it to ourselves only
    resp.headers["Referrer-Policy"] = "same-origin"
    return resp


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    if isinstance(exc, CSRFError):
        message = ("This form has expired or did not come from this dashboard. "
                   "Go back, reload the page and try again.")
    elif exc.code == 429:
        message = "Too many sign-in attempts from your address. Wait a minute and try again."
    else:
        message = exc.description or exc.name
    return render_template("admin/error.html", code=exc.code, title=exc.name, message=message), exc.code


#: endpoint prefix → the nav entry it belongs to
SECTIONS = (("admin.overview", "overview"), ("admin.session", "sessions"), ("admin.disconnect", "sessions"),
            ("admin.extend", "sessions"), ("admin.payment", "payments"), ("admin.reconcile", "payments"),
            ("admin.package", "packages"), ("admin.voucher", "vouchers"), ("admin.health", "health"))


#: nav entry → its list page (where the venue select sends a detail page)
SECTION_PAGES = {"overview": "admin.overview", "sessions": "admin.sessions", "payments": "admin.payments",
                 "packages": "admin.packages", "vouchers": "admin.vouchers_page", "health": "admin.health"}


@bp.context_processor
def helpers():
    endpoint = request.endpoint or ""
    section = next((key for prefix, key in SECTIONS if endpoint.startswith(prefix)), "")
    cfg = _hotspot().config
    admin = g.get("admin")
    venues = visible_venues() if admin is not None else []
    return {"kes": kes, "when": when, "duration": duration, "size": size, "result_text": result_text, "mask_phone": mask_phone,
            "site": cfg.portal.site_name, "admin": admin, "reason_text": reason_text,
            "section": section, "here": here, "venue": g.get("venue"), "venues": venues,
            "multi_site": cfg.multi_site, "show_venues": cfg.multi_site and len(venues) > 1,
            "venue_name": venue_name, "filter_form": _filter_form(section, endpoint)}


# --- venues ---------------------------------------------------------------------------------
def allowed_sites() -> list[str] | None:
    """The venue ids the signed-in account is limited to; None: every venue."""
    return g.admin.site_list


def may_see(site_id: str | None) -> bool:
    """Whether the signed-in account may see a row of venue ``site_id``."""
    allowed = allowed_sites()
    return allowed is None or site_id in allowed


def visible_venues() -> list:
    """The configured venues (:class:`hotspotd.config.Site`) the signed-in account may pick."""
    return [s for s in _hotspot().config.sites.values() if may_see(s.id)]


def venue_name(site_id: str | None) -> str:
    """How the owner reads a venue id (None: a package sold at every venue)."""
    if site_id is None:
        return "every venue"
    site = _hotspot().config.sites.get(site_id)
    return site.name if site else site_id


def _chosen_venue() -> str | None:
    """The ``?site=`` venue (also on a POST's URL), or None. A venue that does not exist or that
    the account may not see answers 404: nothing of it is shown, nothing is changed."""
    chosen = request.args.get("site", "").strip()
    if not chosen:
        return None
    if chosen not in _hotspot().config.sites or not may_see(chosen):
        abort(404, "No such venue.")
    return chosen


def scope() -> reports.Sites:
    """What the figures and lists cover: the chosen venue, else every venue the account may see."""
    return g.venue or allowed_sites()


def here(endpoint: str, **values) -> str:
    """``url_for`` that keeps the chosen venue (``site``) unless ``values`` set it."""
    if g.get("venue") and "site" not in values:
        values["site"] = g.venue
    return url_for(endpoint, **values)


def _filter_form(section: str, endpoint: str) -> dict | None:
    """Where the header's venue select sends the browser, with the page's other query parameters
    (on a list page) kept; None when there is nothing to choose between."""
    if g.get("admin") is None or section not in SECTION_PAGES or not _hotspot().config.multi_site:
        return None
    target = SECTION_PAGES[section]
    keep = {}
    if endpoint == target:
        keep = {k: v for k, v in request.args.items() if k not in ("site", "page")}
    return {"action": url_for(target), "keep": keep}


def kes(amount) -> str:
    return formatting.money(amount)


def when(ts, seconds: bool = False) -> str:
    """Nairobi time of ``ts`` as the owner reads it (``-`` for none)."""
    if not ts:
        return "-"
    return clock.local(ts).strftime("%Y-%m-%d %H:%M:%S") if seconds else clock.local_stamp(ts)


def duration(seconds) -> str:
    return formatting.time_left(seconds)


def size(n) -> str:
    return "unlimited" if n is None else formatting.size(n)


def result_text(desc: str | None) -> str:
    """A payment's result_desc as the owner reads it: Daraja's text as it came, or for a payment that
    ended without one, the English of hotspotd's reason word (what the customer was told)."""
    if desc in i18n.PAYMENT_RESULTS or desc in i18n.REFUSALS:
        return i18n.payment_result(desc, "en")
    return desc or ""


def reason_text(word: str) -> str:
    return REASON_TEXT.get(word, word.replace("_", " "))


def _int(text, default: int | None = None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return default


# --- sign in and out ------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_LIMIT, methods=["POST"])
def login():
    nxt = request.values.get("next")
    if request.method == "GET":
        if current_admin() is not None:
            return redirect(_safe_next(nxt), 303)
        return render_template("admin/login.html", error=None, username="", next=nxt)
    username = request.form.get("username", "").strip()
    user = admins.authenticate(username, request.form.get("password", ""))
    if user is None:
        if admins.is_locked(username):
            error = (f"Too many wrong passwords: this account is locked for {admins.LOCK_SECONDS // 60} minutes. "
                     "Wait, or set a new password on the server with hotspotd admin set-password.")
        else:
            error = "Wrong username or password."
        return render_template("admin/login.html", error=error, username=username, next=nxt), 200
    session.clear()   # nothing from before the sign-in survives it
    session.permanent = True
    session["admin"] = {"id": user.id, "fp": _fingerprint(user), "seen": clock.now()}
    log.info("admin %r signed in from %s", user.username, request.remote_addr)
    return redirect(_safe_next(nxt), 303)


@bp.post("/logout")
def logout():
    log.info("admin %r signed out", g.admin.username)
    session.clear()
    flash("Signed out.", "ok")
    return redirect(url_for("admin.login"), 303)


# --- overview -------------------------------------------------------------------------------
def _nice_ceiling(value: int) -> int:
    value = max(value, 10)
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= value:
            return int(m * exp)
    return int(10 * exp)


def revenue_chart(days: list[reports.DayRevenue], width: int = 720, height: int = 260) -> dict:
    """Geometry of the server-drawn bar chart: bars, y ticks (KES) and day labels."""
    left, right, top, bottom = 84, 10, 14, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_ceiling(max((d.amount for d in days), default=0))
    slot = plot_w / max(len(days), 1)
    bars, labels = [], []
    for i, d in enumerate(days):
        h = plot_h * d.amount / top_value
        bars.append({"day": d.day.isoformat(), "amount": d.amount, "payments": d.payments,
                     "x": round(left + i * slot + slot * 0.15, 1), "w": round(slot * 0.7, 1),
                     "y": round(top + plot_h - h, 1), "h": round(h, 1), "today": i == len(days) - 1})
        if (len(days) - 1 - i) % 7 == 0:      # today and every week before it
            labels.append({"x": round(left + i * slot + slot / 2, 1), "text": f"{d.day.day} {d.day:%b}",
                           "last": i == len(days) - 1})
    step = top_value / 5
    ticks = [{"y": round(top + plot_h - plot_h * k / 5, 1), "text": f"{int(step * k):,}"} for k in range(6)]
    return {"width": width, "height": height, "left": left, "right": width - right, "top": top,
            "base": top + plot_h, "bars": bars, "labels": labels, "ticks": ticks,
            "total": sum(d.amount for d in days)}


@bp.get("/")
def overview():
    now = clock.now()
    p = reports.period(request.args.get("period", "today"), now)
    where = scope()
    return render_template("admin/overview.html", online=reports.online_now(now, where),
                           today=reports.revenue_today(now, where), month=reports.revenue_month(now, where),
                           period=p, periods=reports.PERIODS, funnel=reports.funnel(p.start, p.end, where),
                           chart=revenue_chart(reports.daily_revenue(30, now, where)))


# --- sessions -------------------------------------------------------------------------------
@bp.get("/sessions")
def sessions():
    return render_template("admin/sessions.html", rows=reports.live_sessions(site=scope()))


def _entitlement(ent_id: int) -> Entitlement:
    """The session ``ent_id`` if the account may see its venue; else 404."""
    ent = Entitlement.get_or_none(Entitlement.id == ent_id)
    if ent is None or not may_see(ent.site):
        abort(404)
    return ent


@bp.post("/sessions/<int:ent_id>/disconnect")
def disconnect(ent_id: int):
    ent = _entitlement(ent_id)
    if ent.status != "active":
        flash(f"Session {ent_id} had already ended ({ent.status}).", "error")
        return redirect(here("admin.sessions"), 303)
    macs = access.revoke(ent_id, f"owner {g.admin.username}")
    _hotspot().cut_off(macs, ent_id, "owner")
    log.info("admin %r ended session %s (%d device(s))", g.admin.username, ent_id, len(macs))
    flash(f"Session {ent_id} ended" + (f"; cutting off {', '.join(macs)} at the router." if macs else "."), "ok")
    return redirect(here("admin.sessions"), 303)


@bp.post("/sessions/<int:ent_id>/extend")
def extend(ent_id: int):
    _entitlement(ent_id)
    minutes = _int(request.form.get("minutes"))
    if minutes is None or not 1 <= minutes <= catalogue.MAX_MINUTES:
        flash("Extend by a whole number of minutes (1 to a year).", "error")
        return redirect(here("admin.sessions"), 303)
    try:
        ent = _hotspot().extend(ent_id, minutes * 60, f"owner {g.admin.username}")
    except access.AccessError as exc:
        flash(f"Session {ent_id}: {REFUSAL_TEXT.get(exc.code, exc.code)}.", "error")
    else:
        log.info("admin %r extended session %s by %d min", g.admin.username, ent_id, minutes)
        flash(f"Session {ent_id} extended by {minutes} min; it now ends {when(ent.expires_at)}.", "ok")
    return redirect(here("admin.sessions"), 303)


# --- payments -------------------------------------------------------------------------------
def _payment_filter() -> tuple[reports.PaymentFilter, dict]:
    f, errors = reports.PaymentFilter.from_params(request.args)
    where = scope()
    return dataclasses.replace(f, site=where if where is None or isinstance(where, str) else tuple(where)), errors


@bp.get("/payments")
def payments():
    f, errors = _payment_filter()
    page = reports.payments_page(f, _int(request.args.get("page"), 1) or 1, PER_PAGE)
    return render_template("admin/payments.html", f=f, errors=errors, page=page, states=reports.PAYMENT_STATES,
                           params=f.params(), failure_reason=reports.failure_reason)


@bp.get("/payments.csv")
def payments_csv():
    f, _ = _payment_filter()
    out = io.StringIO()
    out.write("\ufeff")   # a BOM, so Excel reads package names as UTF-8
    reports.write_payments_csv(f.query(), out, with_site=_hotspot().config.multi_site)
    stamp = reports.local_day(clock.now()).isoformat()
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="payments-{stamp}.csv"'})


def _payment(payment_id: int) -> Payment:
    """The payment ``payment_id`` if the account may see its venue; else 404."""
    p = Payment.get_or_none(Payment.id == payment_id)
    if p is None or not may_see(p.site):
        abort(404)
    return p


@bp.get("/payments/<int:payment_id>")
def payment(payment_id: int):
    p = _payment(payment_id)
    return render_template("admin/payment.html", p=p, events=reports.timeline(p), ent=access.entitlement_of(p),
                           can_reconcile=p.status in reports.RECONCILABLE and bool(p.checkout_request_id),
                           reason=reports.failure_reason(p))


@bp.post("/payments/<int:payment_id>/reconcile")
def reconcile(payment_id: int):
    p = _payment(payment_id)
    target = here("admin.payment", payment_id=payment_id)
    if p.status not in reports.RECONCILABLE:
        flash(f"This payment is already {p.status}; there is nothing to ask M-Pesa.", "error")
        return redirect(target, 303)
    if not p.checkout_request_id:
        flash("The prompt never reached M-Pesa (no CheckoutRequestID), so there is nothing to ask.", "error")
        return redirect(target, 303)
    try:
        status = _hotspot().payments.query(p)
    except Exception:  # noqa: BLE001 - the owner sees it failed; the log has the trace
        log.exception("reconcile of payment %s failed", payment_id)
        flash("Asking M-Pesa failed; see the log.", "error")
        return redirect(target, 303)
    log.info("admin %r reconciled payment %s: %s", g.admin.username, payment_id, status)
    if status == p.status:
        flash(f"Asked M-Pesa: no change, the payment is still {status}.", "ok")
    else:
        flash(f"Asked M-Pesa: the payment is now {status}.", "ok")
    return redirect(target, 303)


# --- packages -------------------------------------------------------------------------------
def package_editable(p: Package) -> bool:
    """Whether the signed-in account may change ``p``: an account that sees every venue changes
    every package; a limited one only the packages of its own venues. A package sold at every
    venue is the owner's: a limited account sees it (its venues sell it) but cannot change it."""
    allowed = allowed_sites()
    return allowed is None or (p.site is not None and p.site in allowed)


def _package(package_id: int) -> Package:
    """The package ``package_id`` to change: 404 when the account's venues do not sell it, 403 when
    it may see but not change it (:func:`package_editable`)."""
    p = Package.get_or_none(Package.id == package_id)
    if p is None or not (p.site is None or may_see(p.site)):
        abort(404)
    if not package_editable(p):
        abort(403, "This package is sold at every venue: only an account that sees every venue can change it.")
    return p


def _venue_fields() -> bool:
    """Whether the package form has the venue select and the roams box."""
    return _hotspot().config.multi_site or allowed_sites() is not None


def parse_venue(form, p: Package | None) -> tuple[dict, dict]:
    """The package's ``site`` (empty: every venue) and ``roams`` from the form, and the errors.
    A limited account must name one of its venues and cannot change ``roams`` (time that works at
    other venues is the owner's call)."""
    errors: dict[str, str] = {}
    allowed = allowed_sites()
    text = str(form.get("site", "")).strip()
    site = None
    if not text:
        if allowed is not None:
            errors["site"] = "choose one of your venues"
    elif text not in _hotspot().config.sites or not may_see(text):
        errors["site"] = "choose a venue from the list"
    else:
        site = text
    roams = form.get("roams") == "1" if allowed is None else bool(p and p.roams)
    return {"site": site, "roams": roams}, errors


def _package_form_values(p: Package | None) -> dict:
    if p is None:
        allowed = allowed_sites()
        site = g.venue or (allowed[0] if allowed else "")
        return {"name": "", "name_sw": "", "price": "", "minutes": "60", "data_mb": "", "rate": "", "devices": "1", "site": site,
                "roams": ""}
    return {**catalogue.values_of(p), "site": p.site or "", "roams": "1" if p.roams else ""}


@bp.get("/packages")
def packages():
    return render_template("admin/packages.html", packages=reports.packages(scope()), editable=package_editable)


@bp.route("/packages/new", methods=["GET", "POST"])
def package_new():
    return _package_form(None)


@bp.route("/packages/<int:package_id>", methods=["GET", "POST"])
def package_edit(package_id: int):
    return _package_form(_package(package_id))


def _package_form(p: Package | None):
    venue_fields = _venue_fields()
    if request.method == "GET":
        return render_template("admin/package_form.html", p=p, values=_package_form_values(p), errors={},
                               venue_fields=venue_fields)
    fields, errors = catalogue.parse(request.form)
    if venue_fields:
        venue, venue_errors = parse_venue(request.form, p)
        fields.update(venue)
        errors.update(venue_errors)
    if errors:
        values = {k: request.form.get(k, "") for k in catalogue.FIELDS + ("site", "roams")}
        return render_template("admin/package_form.html", p=p, values=values, errors=errors,
                               venue_fields=venue_fields), 400
    if p is None:
        p = catalogue.add(fields)
        flash(f"Package “{p.name}” added; customers can buy it now.", "ok")
    else:
        catalogue.save(p, fields)
        flash(f"Package “{fields['name']}” saved.", "ok")
    log.info("admin %r saved package %s", g.admin.username, p.id)
    return redirect(here("admin.packages"), 303)


@bp.post("/packages/<int:package_id>/active")
def package_active(package_id: int):
    p = _package(package_id)
    active = request.form.get("active") == "1"
    catalogue.set_active(p, active)
    flash(f"Package “{p.name}” {'is on offer again' if active else 'is no longer offered'}.", "ok")
    return redirect(here("admin.packages"), 303)


@bp.post("/packages/<int:package_id>/move")
def package_move(package_id: int):
    """Swap the package with its neighbour in the list the page shows (the chosen venue's, or the
    account's venues'): the order of every other pair of packages stays as it was."""
    direction = request.form.get("direction")
    if direction not in ("up", "down"):
        abort(400, "direction: up or down")
    _package(package_id)
    with database.atomic():
        order = reports.packages()
        shown = [p.id for p in reports.packages(scope())]
        if package_id not in shown:
            shown = [p.id for p in order]
        index = shown.index(package_id)
        other = index - 1 if direction == "up" else index + 1
        if 0 <= other < len(shown):
            ids = [p.id for p in order]
            a, b = ids.index(package_id), ids.index(shown[other])
            order[a], order[b] = order[b], order[a]
        for position, p in enumerate(order):   # positions 0..n-1: no ties left to break by price
            if p.position != position:
                Package.update(position=position).where(Package.id == p.id).execute()
    return redirect(here("admin.packages"), 303)


# --- vouchers -------------------------------------------------------------------------------
def _default_batch() -> str:
    base = clock.local_stamp(clock.now())
    name, n = base, 2
    while Voucher.select().where(Voucher.batch == name).exists():   # two batches in one minute
        name, n = f"{base} #{n}", n + 1
    return name


def _voucher_every_venue() -> bool:
    # vouchers carry no venue: those of a package sold at every venue are the owner's
    return allowed_sites() is None


@bp.get("/vouchers")
def vouchers_page():
    return _vouchers_page({}, {"package": "", "count": "20", "batch": "", "sms_package": "", "phone": "",
                               "lang": "sw"})


def _vouchers_page(errors: dict, values: dict) -> str:
    packages = Package.select().order_by(Package.active.desc(), Package.position, Package.id)
    cond = reports.sold_at(scope(), _voucher_every_venue())
    if cond is not None:
        packages = packages.where(cond)
    return render_template("admin/vouchers.html", batches=reports.voucher_batches(scope(), _voucher_every_venue()),
                           packages=packages, errors=errors, values=values, max_batch=vouchers.MAX_BATCH,
                           sms_on=_hotspot().sms_gateway is not None)


@bp.post("/vouchers")
def vouchers_generate():
    values = {k: request.form.get(k, "").strip() for k in ("package", "count", "batch")}
    errors: dict[str, str] = {}
    package = Package.get_or_none(Package.id == _int(values["package"], 0))
    if package is None or not (_voucher_every_venue() or package.site in allowed_sites()):
        errors["package"] = "choose a package"
    count = catalogue.whole(request.form, "count", 1, vouchers.MAX_BATCH, errors, "how many")
    batch = " ".join(values["batch"].split())
    if len(batch) > 32:
        errors["batch"] = "at most 32 characters"
    if errors:
        return _vouchers_page(errors, values), 400
    made = vouchers.generate(package.id, count, batch or _default_batch())
    log.info("admin %r generated %d voucher(s) for package %s", g.admin.username, len(made), package.id)
    flash(f"{len(made)} voucher(s) for “{package.name}” made in batch {made[0].batch}.", "ok")
    return redirect(here("admin.voucher_sheet", batch=made[0].batch), 303)


@bp.post("/vouchers/sms")
def vouchers_sms():
    """One voucher, made and sent to a customer's phone by SMS (the SMS job sends it)."""
    values = {k: request.form.get(k, "").strip() for k in ("sms_package", "phone", "lang")}
    errors: dict[str, str] = {}
    if _hotspot().sms_gateway is None:
        abort(404)
    package = Package.get_or_none(Package.id == _int(values["sms_package"], 0))
    if package is None or not (_voucher_every_venue() or package.site in allowed_sites()):
        errors["sms_package"] = "choose a package"
    try:
        phone = normalize_phone(values["phone"])
    except InvalidPhone:
        errors["phone"] = "a Kenyan mobile number, e.g. 0712 345 678"
    if values["lang"] not in ("en", "sw"):
        errors["lang"] = "English or Kiswahili"
    if errors:
        return _vouchers_page(errors, {"package": "", "count": "20", "batch": "", **values}), 400
    (made,) = vouchers.generate(package.id, 1, _default_batch() + " SMS")
    sms_outbox.queue_voucher(made.code, phone, values["lang"])
    if _hotspot().scheduler is not None and _hotspot().scheduler.has("sms"):
        _hotspot().scheduler.wake("sms")
    log.info("admin %r sent voucher for package %s by SMS to %s", g.admin.username, package.id, mask_phone(phone))
    flash(f"Voucher {vouchers.display(made.code)} for “{package.name}” is on its way to {mask_phone(phone)} by SMS.",
          "ok")
    return redirect(here("admin.vouchers_page"), 303)


@bp.get("/vouchers/sheet")
def voucher_sheet():
    batch = request.args.get("batch", "")
    rows = reports.batch_vouchers(batch, allowed_sites(), _voucher_every_venue())
    if not rows:
        abort(404, "No voucher batch by that name.")
    return render_template("admin/voucher_sheet.html", batch=batch, vouchers=rows, display=vouchers.display)


# --- health ---------------------------------------------------------------------------------
@bp.get("/health")
def health():
    checks = health_live.run(_hotspot(), site=scope())
    worst = next((s for s in ("fail", "warn") if any(c.state == s for c in checks)), "ok")
    return render_template("admin/health.html", checks=checks, worst=worst,
                           readback=_hotspot().readback is not None and _hotspot().readback.covers())


@bp.post("/health/readback")
def health_readback():
    """Read the routers back now: the job runs on the scheduler's thread, never on this request's."""
    hs = _hotspot()
    if hs.scheduler is None or hs.readback is None or not hs.scheduler.has("readback"):
        flash("The read-back is not running here ([scheduler] readback_every_seconds = 0, or no router to read "
              "back: a MikroTik over its API, a CoovaChilli from its accounting).", "error")
    else:
        hs.scheduler.wake("readback")
        flash("Reading the routers back now; check again in a few seconds.", "ok")
    return redirect(here("admin.health"), 303)
