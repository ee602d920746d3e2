"""The portal API (/api/portal) and the Daraja callback endpoints."""
from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import NamedTuple

import peewee as pw
from flask import Blueprint, current_app, jsonify, request

from hotspotd import access, c2b, clock, router_login, vouchers
from hotspotd.identifiers import InvalidMac, normalize_mac, normalize_phone
from hotspotd.daraja import codes
from hotspotd.errors import DomainError
from hotspotd.storage.models import Entitlement, Package, Payment, execute
from hotspotd.payments import BAD_MAC, UNKNOWN_SITE, PaymentRefused, on_sale

from . import i18n, limiter
from .running import hotspot as _hotspot
from .i18n import N_

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api/portal")
callbacks = Blueprint("callbacks", __name__)

STATUS_OF = {"created": "pending", "pending": "pending", "success": "success", "failed": "failed",
             "cancelled": "cancelled", "timeout": "timeout", "error": "failed"}


#: The API's one table of refusals: a code of the core (hotspotd.errors.DomainError) → HTTP status;
#: any other code is a 400 (the input named by ``field`` is to be corrected). As openapi.json says:
#: 404 for what is not there (a venue, a package on offer, a live session for a receipt, a usable
#: voucher), 502 when M-Pesa cannot be reached, 503 when the payment cannot be recorded safely.
#: (``unknown_site`` was a 400 on /receipt and /voucher, a 404 on /packages and /pay: now 404 on all.)
STATUS_OF_REFUSAL = {
    "unknown_site": 404, "package_not_on_offer": 404,
    "receipt_not_found": 404, "time_used_up": 404, "data_used_up": 404, "other_venue": 404,
    "not_a_voucher": 404, "voucher_invalid": 404, "voucher_used": 404, "voucher_other_venue": 404,
    "mpesa_unavailable": 502, "mpesa_busy": 503, "cannot_record": 503, "storage_busy": 503,
}


def _lang(req=request) -> str:
    """The answer's language: ``?lang=``, else Accept-Language, else English."""
    lang = req.args.get("lang") or i18n.accepted(req.headers.get("Accept-Language")) or "en"
    return lang if lang in ("en", "sw") else "en"


def language() -> str:
    """This request's answer language (see :func:`_lang`)."""
    return _lang(request)


def _body_field(name: str) -> str:
    data = request.get_json(silent=True)
    value = data.get(name) if isinstance(data, dict) else None
    return f"{name}:{value}" if isinstance(value, str) else f"{name}:-"


def _limit(key: str):
    return lambda: getattr(_hotspot().config.portal, key)


def package_json(p: Package) -> dict:
    return {"id": p.id, "name": p.name, "price": p.price, "currency": "KES",
            "durationSeconds": p.duration_seconds, "dataCapBytes": p.data_cap_bytes,
            "rateLimit": p.rate_limit, "devices": p.devices}


def _site_id(*sources) -> str:
    """The venue a request names: ``site`` (or a CoovaChilli ``nasid``) in the query string or in
    the JSON body or its ``login`` object (see :meth:`hotspotd.venues.Venues.site_for`). Raises
    PaymentRefused for a venue this install does not have."""
    ctx: dict = {}
    for values in sources:
        ctx.update(router_login.router_context(values))
    site = _hotspot().venues.site_for(ctx)
    if site is None:
        raise PaymentRefused(UNKNOWN_SITE, "site")
    return site.id


def _refused(exc: DomainError):
    """The answer to a refusal of the core, through :data:`STATUS_OF_REFUSAL`."""
    body = {"success": False, "message": i18n.refusal(exc, _lang())}
    if exc.field:
        body["field"] = exc.field
    return jsonify(body), STATUS_OF_REFUSAL.get(exc.code, 400)


@bp.get("/packages")
def packages():
    try:
        site = _site_id(request.args)
    except PaymentRefused as exc:
        return _refused(exc)
    answer = {"success": True, "site": site, "packages": [package_json(p) for p in on_sale(site)]}
    if request.args.get("macAddress"):
        try:
            mac = normalize_mac(request.args["macAddress"])
        except InvalidMac:
            return _refused(PaymentRefused(BAD_MAC, "macAddress"))
        answer["manualPayment"] = c2b.manual_payment(_hotspot().config.payee(site), mac, site)
    return jsonify(answer)


@bp.post("/pay")
@limiter.limit(_limit("pay_limit_per_client"))
@limiter.limit(_limit("pay_limit_per_phone"), key_func=lambda: _body_field("phone"))
@limiter.limit(_limit("pay_limit_per_device"), key_func=lambda: _body_field("macAddress"))
def pay():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return jsonify({"success": False, "message": "Send JSON: {\"phone\", \"packageId\", \"macAddress\"}."}), 400
    context = router_login.router_context(data.get("login")) or None
    try:
        site = _site_id(request.args, data.get("login"), data)
        payment, reused = _hotspot().payments.initiate(
            data.get("phone"), data.get("packageId"), data.get("macAddress"),
            client_ip=request.remote_addr, login_context=context, site=site, lang=_lang())
    except PaymentRefused as exc:
        return _refused(exc)
    message = i18n.t(N_("A payment prompt was already sent to your phone; enter your M-Pesa PIN there.") if reused
                     else N_("Check your phone and enter your M-Pesa PIN to pay."), _lang())
    return jsonify({"success": True, "message": message, "checkoutRequestId": payment.checkout_request_id,
                    "amount": payment.amount, "packageName": payment.package.name, "reused": reused})


def session_json(payment: Payment) -> dict | None:
    ent = access.entitlement_of(payment)
    return None if ent is None else _session_json(ent, ent.package.name)


def _session_json(ent, package_name: str) -> dict:
    """``ent``: an Entitlement, or the :class:`_SessionRow` the status poll read."""
    return {"sessionId": str(ent.id), "packageName": package_name, "startsAt": clock.iso(ent.started_at),
            "expiresAt": clock.iso(ent.expires_at), "remainingSeconds": access.remaining_seconds(ent),
            "status": ent.status}


def payment_status_json(payment: Payment, lang: str = "en") -> dict:
    session = session_json(payment) if STATUS_OF[payment.status] == "success" else None
    return _status_json(payment, payment.package.name, session, lang)


def _status_json(payment, package_name: str, session: dict | None, lang: str) -> dict:
    """The status answer of ``payment`` (a Payment, or the :class:`_PaymentRow` the status poll
    read); ``session``: its :func:`session_json`, used when the payment succeeded."""
    status = STATUS_OF[payment.status]
    body = {"success": True, "status": status, "checkoutRequestId": payment.checkout_request_id,
            "amount": payment.amount, "packageName": package_name, "session": None}
    if status == "success":
        body["session"] = session
        body["message"] = i18n.payment_result("paid", lang)
    elif status == "pending":
        body["message"] = i18n.t(N_("Enter your M-Pesa PIN on your phone."), lang)
    else:
        code = payment.result_code
        body["resultCode"] = code
        body["reason"] = codes.reason(code) if code else ("no_response" if status == "timeout" else "failed")
        if code:
            body["message"] = i18n.payment_result(codes.reason(code), lang)
        elif payment.result_desc and not _is_reason(payment.result_desc):
            body["message"] = payment.result_desc     # a payment settled before its result was a reason word
        else:
            body["message"] = i18n.payment_result(payment.result_desc or "no_response", lang)
    return body


def _is_reason(text: str) -> bool:
    return text in i18n.PAYMENT_RESULTS or text in i18n.REFUSALS


def _session_body(ent, message: str) -> dict:
    data_left = access.bytes_left(ent)
    return {"success": True, "message": message, "session": {
        "sessionId": str(ent.id), "packageName": ent.package.name, "expiresAt": clock.iso(ent.expires_at),
        "remainingSeconds": access.remaining_seconds(ent), "dataLeftBytes": data_left, "status": ent.status}}


def _json_mac(data: dict) -> str:
    try:
        return normalize_mac(data.get("macAddress") or "")
    except InvalidMac:
        raise PaymentRefused("mac_missing", "macAddress") from None


@bp.post("/receipt")
@limiter.limit(_limit("redeem_limit_per_client"))
def receipt():
    """"Already paid?": move the session bought with an M-Pesa receipt to this device."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return jsonify({"success": False, "message": "Send JSON: {\"receipt\", \"phone\", \"macAddress\"}."}), 400
    try:
        mac = _json_mac(data)
        phone = normalize_phone(data.get("phone"))
        code = access.normalize_receipt(data.get("receipt"))
        site = _site_id(request.args, data)
        ent, unbound = _hotspot().c2b.already_paid(code, phone, mac, site)
    except DomainError as exc:      # PaymentRefused, InvalidPhone, AccessError
        if exc.code == "receipt_not_found" and _hotspot().lookups.worth_asking(code):
            # a code hotspotd never saw: M-Pesa is asked; GET /receipt/<lookupId> gives the answer
            row = _hotspot().lookups.ask(code, phone, mac, site)
            return jsonify({"success": False, "checking": True, "lookupId": row.id,
                            "message": i18n.t(N_("Checking with M-Pesa…"), _lang())}), 202
        return _refused(exc)
    _hotspot().cut_off(unbound, ent.id, "moved")
    return jsonify(_session_body(ent, i18n.t(N_("Your time is now on this device."), _lang())))


@bp.get("/receipt/<int:lookup_id>")
def receipt_lookup(lookup_id: int):
    """The answer to a code "Already paid?" sent to M-Pesa (for the device that asked)."""
    try:
        mac = normalize_mac(request.args.get("macAddress") or "")
    except InvalidMac:
        return _refused(PaymentRefused(BAD_MAC, "macAddress"))
    row = _hotspot().lookups.status(lookup_id)
    if row is None or row.mac != mac:
        return jsonify({"success": False, "message": "Not Found"}), 404
    if row.state == "asking":
        return jsonify({"success": False, "checking": True, "lookupId": row.id,
                        "message": i18n.t(N_("Checking with M-Pesa…"), _lang())}), 202
    if row.state == "granted":
        ent = Entitlement.get(Entitlement.payment == row.payment_id)
        return jsonify(_session_body(ent, i18n.t(N_("M-Pesa confirmed your payment. Your time is on this device."),
                                                 _lang())))
    return jsonify({"success": False, "reason": row.reason,
                    "message": i18n.t(i18n.LOOKUP_REFUSALS.get(row.reason, i18n.LOOKUP_REFUSALS["unavailable"]), _lang())}), \
        (404 if row.state == "refused" else 503)


@bp.post("/voucher")
@limiter.limit(_limit("redeem_limit_per_client"))
def voucher():
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return jsonify({"success": False, "message": "Send JSON: {\"code\", \"macAddress\"}."}), 400
    try:
        ent = vouchers.redeem(str(data.get("code") or ""), _json_mac(data), site=_site_id(request.args, data))
    except DomainError as exc:      # PaymentRefused, VoucherError
        return _refused(exc)
    return jsonify(_session_body(ent, i18n.t(N_("Voucher accepted."), _lang())))


def router_login_form(payment: Payment, mac: str | None = None) -> router_login.LoginForm | None:
    """How the paying browser logs in at the router, for the device that paid only (the
    credentials of a session are not for whoever learns its CheckoutRequestID); ``mac``: the
    router's ``mac`` variable of the asking page."""
    if not _paid_from(payment, request.remote_addr, mac, _hotspot()):
        return None
    return _login_form(payment, access.entitlement_of(payment), _hotspot())


def _paid_from(payment, remote_addr: str | None, mac: str | None, hotspot) -> bool:
    """Whether the asker is the device that paid, and the payment went through."""
    return payment.status == "success" and asked_by_payer(payment, remote_addr, mac, hotspot)


def asked_by_payer(payment, remote_addr: str | None, mac: str | None, hotspot) -> bool:
    """Whether the asker is the device that made ``payment`` (whatever became of it): the same
    address, and behind a CoovaChilli's NAT (where every device has the router's address) the same
    MAC as well."""
    if not payment.client_ip or payment.client_ip != remote_addr:
        return False
    if remote_addr not in hotspot.venues.nat_addresses:
        return True
    try:
        return bool(mac) and normalize_mac(mac) == payment.mac
    except InvalidMac:
        return False


def _login_form(payment, ent, hotspot) -> router_login.LoginForm | None:
    """``payment``/``ent``: a Payment and its Entitlement (or None), or the status poll's rows."""
    if ent is None or ent.status not in ("active", access.HELD) or not ent.login_user:
        return None
    ctx = json.loads(payment.login_context) if payment.login_context else {}
    return router_login.login_form(ctx, ent.login_user, ent.login_password,
                                   hotspot.venues.uamsecret_for(ctx))


# --- the status poll ------------------------------------------------------------------------
# Every phone waiting for its customer's PIN asks for its payment's status every second or two:
# the portal's hottest request. It is answered from one hand-written statement instead of the five
# queries the models made (the payment, its package, its entitlement twice, that one's package):
# those took ~3.5 ms a poll, nearly all of it peewee building SQL; SQLite answers this one in
# ~20 µs. The same statement on SQLite and PostgreSQL; at most one row (checkout_request_id and
# entitlement.payment_id are both unique).
_STATUS_SQL = (
    'SELECT p.id, p.status, p.checkout_request_id, p.amount, p.result_code, p.result_desc, p.client_ip,'
    ' p.login_context, p.mac, pk.name,'
    ' e.id, e.status, e.started_at, e.expires_at, e.login_user, e.login_password, ek.name'
    ' FROM "payment" AS p LEFT JOIN "package" AS pk ON pk.id = p.package_id'
    ' LEFT JOIN "entitlement" AS e ON e.payment_id = p.id'
    ' LEFT JOIN "package" AS ek ON ek.id = e.package_id'
    ' WHERE p.checkout_request_id = ?')
#: the fields of the SELECT, in its order: each value goes through its field's python_value, as
#: when peewee loads a model (the JSON then has exactly the types it had)
_STATUS_FIELDS = (
    Payment.id, Payment.status, Payment.checkout_request_id, Payment.amount, Payment.result_code,
    Payment.result_desc, Payment.client_ip, Payment.login_context, Payment.mac, Package.name,
    Entitlement.id, Entitlement.status, Entitlement.started_at, Entitlement.expires_at, Entitlement.login_user,
    Entitlement.login_password, Package.name)


class _PaymentRow(NamedTuple):
    """The columns of a Payment the status answer reads (named as on the model), and its package's name."""
    id: int
    status: str
    checkout_request_id: str
    amount: int
    result_code: str | None
    result_desc: str | None
    client_ip: str | None
    login_context: str | None
    mac: str | None
    package_name: str | None


class _SessionRow(NamedTuple):
    """The columns of the payment's Entitlement the status answer reads, and its package's name."""
    id: int
    status: str
    started_at: float
    expires_at: float
    login_user: str | None
    login_password: str | None
    package_name: str | None


NO_SUCH_PAYMENT = N_("No payment with that id.")


def no_such_payment(req) -> dict:
    """The 404 body of the status poll, in ``req``'s language."""
    return {"success": False, "message": i18n.t(NO_SUCH_PAYMENT, _lang(req))}


def status_body(checkout_request_id: str, req, hotspot) -> dict | None:
    """The answer to ``GET /api/portal/status/<checkout_request_id>`` (None: no such payment),
    from one statement. ``req``: the request, Flask's or the one :mod:`portal_web.fastlane` made
    (its language and its client's address matter)."""
    row = execute(_STATUS_SQL, (checkout_request_id[:64],)).fetchone()
    if row is None:
        return None
    row = [field.python_value(value) for field, value in zip(_STATUS_FIELDS, row)]
    payment = _PaymentRow(*row[:10])
    ent = _SessionRow(*row[10:]) if row[10] is not None else None
    if payment.package_name is None or (ent is not None and ent.package_name is None):
        # a foreign key the database enforces; the models would raise this (a 500), and so do we
        raise Package.DoesNotExist(f"no package for payment {payment.id}")
    session = None
    if ent is not None and STATUS_OF[payment.status] == "success":
        session = _session_json(ent, ent.package_name)
    body = _status_json(payment, payment.package_name, session, _lang(req))
    paid_here = _paid_from(payment, req.remote_addr, req.args.get("mac"), hotspot)
    form = _login_form(payment, ent, hotspot) if paid_here else None
    body["routerLogin"] = form.as_json() if form else None
    return body


@bp.get("/status/<checkout_request_id>")
def status(checkout_request_id: str):
    """Served by :mod:`portal_web.fastlane` (same code, without Flask's request machinery); this
    view answers the requests it passes on (HEAD, odd paths) and is the reference."""
    body = status_body(checkout_request_id, request, _hotspot())
    if body is None:
        return jsonify(no_such_payment(request)), 404
    return jsonify(body)


def _take_callback():
    """Store first, answer at once; processing errors never change the answer Daraja gets."""
    service = _hotspot().payments
    body = request.get_data(cache=False)       # over the size limit: 413, before anything is stored
    try:
        cb = service.record_callback(body, request.remote_addr, request.path)
    except (pw.DatabaseError, pw.InterfaceError) as exc:   # the database is away; the STK query settles it
        log.error("a callback could not be stored (%s); its payment is settled by the STK query",
                  str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return jsonify({"ResultCode": 1, "ResultDesc": "Temporarily unavailable"}), 503
    try:
        service.process_callback(cb.id)
    except Exception:  # noqa: BLE001 - the body is stored; the scheduler retries it
        log.exception("processing callback %s failed; it stays stored for a retry", cb.id)
    return jsonify({"ResultCode": 0, "ResultDesc": "Accepted"})


@cache
def _openapi_document() -> bytes:
    return (Path(__file__).parent / "openapi.json").read_bytes()


@bp.get("/openapi.json")
def openapi():
    """This API in OpenAPI 3.1 (``portal_web/openapi.json``; a test keeps it in step with the routes)."""
    return current_app.response_class(_openapi_document(), mimetype="application/json")


@bp.post("/mpesa/callback")
def seed_callback():
    return _take_callback()


@callbacks.post("/cb/<token>")
def token_callback(token: str):
    if token != _hotspot().callback_token:
        return jsonify({"ResultCode": 1, "ResultDesc": "Rejected"}), 404
    return _take_callback()


@callbacks.post("/cb/<token>/ts/result")
def lookup_result(token: str):
    """M-Pesa's answer to a Transaction Status lookup (hotspotd.lookups)."""
    if token != _hotspot().callback_token:
        return jsonify({"ResultCode": 1, "ResultDesc": "Rejected"}), 404
    _hotspot().lookups.answer(request.get_data(cache=False))
    return jsonify({"ResultCode": 0, "ResultDesc": "Accepted"})


@callbacks.post("/cb/<token>/ts/timeout")
def lookup_timeout(token: str):
    """M-Pesa gave up waiting on a Transaction Status lookup."""
    if token != _hotspot().callback_token:
        return jsonify({"ResultCode": 1, "ResultDesc": "Rejected"}), 404
    _hotspot().lookups.answer(request.get_data(cache=False), timed_out=True)
    return jsonify({"ResultCode": 0, "ResultDesc": "Accepted"})


@callbacks.post("/cb/<token>/c2b/validation")
def c2b_validation(token: str):
    """Safaricom asks before it takes a payment made from the M-Pesa menu (when validation is on)."""
    if token != _hotspot().callback_token:
        return jsonify({"ResultCode": 1, "ResultDesc": "Rejected"}), 404
    code, desc = _hotspot().c2b.validation(request.get_data(cache=False))
    return jsonify({"ResultCode": code, "ResultDesc": desc})


@callbacks.post("/cb/<token>/c2b/confirmation")
def c2b_confirmation(token: str):
    """Safaricom says a payment from the M-Pesa menu went through: stored, then granted or kept."""
    if token != _hotspot().callback_token:
        return jsonify({"ResultCode": 1, "ResultDesc": "Rejected"}), 404
    body = request.get_data(cache=False)
    try:
        _hotspot().c2b.confirmation(body, request.path, request.remote_addr)
    except ValueError as exc:
        log.warning("a C2B confirmation that is not one (%s, %d bytes)", exc, len(body))
        return jsonify({"ResultCode": 1, "ResultDesc": "Not a C2B confirmation"}), 400
    return jsonify({"ResultCode": 0, "ResultDesc": "Success"})


@bp.get("/instance")
def instance():
    """Which database this daemon uses (the random ``database_id`` it keeps there), for
    ``hotspotd check`` on the same machine: answered to loopback only, 404 to anyone else."""
    if request.remote_addr not in ("127.0.0.1", "::1"):
        return jsonify({"success": False, "message": "Not Found"}), 404
    from hotspotd.storage import db
    return jsonify({"databaseId": db.get_setting("database_id")})
