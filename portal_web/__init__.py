"""The HTTP face of hotspotd: splash page (/), portal API (/api/portal), callbacks, dashboard (/admin),
figures for Prometheus (/metrics).

``create_app(hotspot)`` builds the Flask app around a running :class:`hotspotd.service.daemon.Hotspot`;
the production server is waitress (see :mod:`portal_web.serve`).
"""
from __future__ import annotations

import logging
import time

from flask import Flask, jsonify, request
from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException

from . import i18n

def client_key() -> str:
    """Whom a "per client" rate limit counts: the address, and for a request from a CoovaChilli's
    address (``[[routers]]`` kind coova) the device's MAC it names too (the router's ``mac``
    variable, the API's ``macAddress``). Behind chilli's NAT every device's request comes from the
    router's one address: by address alone, one busy venue's customers would share one allowance.
    Anyone else cannot buy a fresh allowance by naming another MAC."""
    from .running import hotspot

    address = get_remote_address()
    if address not in hotspot().venues.nat_addresses:
        return address
    data = request.get_json(silent=True) if request.is_json else None
    mac = (data.get("macAddress") if isinstance(data, dict) else None) or request.values.get("mac")
    return f"{address}|{mac[:64]}" if isinstance(mac, str) and mac else address


limiter = Limiter(key_func=client_key, storage_uri="memory://", headers_enabled=True)
#: CSRF tokens for the dashboard's forms only: the JSON API and Daraja's callbacks carry none, so
#: nothing is checked by default and the admin blueprint calls ``csrf.protect()`` itself.
csrf = CSRFProtect()


def create_app(hotspot) -> Flask:
    app = Flask(__name__)
    app.config["HOTSPOT"] = hotspot
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    limiter.init_app(app)
    # templates say _("..."): Flask-Babel, in the page's language (the splash page's choice)
    Babel(app, locale_selector=i18n.lang, default_translation_directories=str(i18n.TRANSLATIONS))

    from . import admin, api, fastlane, metrics_view, opennds, splash
    admin.configure(app, hotspot)
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(api.callbacks)
    app.register_blueprint(splash.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(metrics_view.bp)
    app.register_blueprint(opennds.bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 429:
            body = {"success": False, "message": i18n.t(i18n.TOO_MANY_REQUESTS, api.language())}
        else:
            body = {"success": False, "message": exc.description or exc.name}
        return jsonify(body), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return jsonify({"success": False, "message": i18n.t(i18n.UNEXPECTED, api.language())}), 500

    app.after_request(add_security_headers)
    _skip_idle_limiter_check(app)
    # NB: the status poll is answered ahead of Flask and so of its request hooks (the security
    # headers it adds itself, with add_security_headers): see portal_web/fastlane.py
    app.wsgi_app = fastlane.StatusFastLane(app, app.wsgi_app)
    _quiet_queue_warnings()
    return app


def _skip_idle_limiter_check(app: Flask) -> None:
    """Unregister Flask-Limiter's before-request check while it has nothing to check.

    That hook enforces only app-wide limits (application, default, blueprint and meta limits);
    every ``@limiter.limit`` view checks its own limits in its decorator, with or without it. This
    app sets none app-wide, yet the hook took ~100 µs of every request to find that out (7-10 % of
    the splash page's time; ~20 % more splash pages a second without it). Once any app-wide limit
    is configured, the hook stays. Flask-Limiter 4 has no public switch for this: should these
    attributes be renamed, the app fails to start rather than limit differently.

    PRIVATE NAMES of Flask-Limiter: ``limit_manager._blueprint_limits``, ``_meta_limits``,
    ``_check_request_limit``. tests/test_library_internals.py fails when an upgrade changes them."""
    manager = limiter.limit_manager
    if manager.application_limits or manager.default_limits or manager._blueprint_limits or limiter._meta_limits:
        return
    app.before_request_funcs[None].remove(limiter._check_request_limit)


def _quiet_queue_warnings() -> None:
    queue_log = logging.getLogger("waitress.queue")
    if not any(isinstance(f, QueueWarningsPerMinute) for f in queue_log.filters):
        queue_log.addFilter(QueueWarningsPerMinute())


class QueueWarningsPerMinute(logging.Filter):
    """Let one of waitress's "Task queue depth is N" warnings through a minute.

    Waitress logs one each time a request has to wait for a free thread: under load that is every
    other request (28,000 lines in a 20 s benchmark of the status poll), each one formatted and
    written by waitress's I/O loop, the thread every request passes through. Without them the
    status poll served ~25 % more requests a second. One a minute still says the portal is saturated."""

    def __init__(self, seconds: float = 60.0):
        super().__init__()
        self.seconds = seconds
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.seconds   # a race between threads lets one more through: harmless
        return True


#: on every answer, unless the view set its own
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                 "form-action *; frame-ancestors 'none'")),
)
_SECURITY_HEADER_KEYS = tuple((name.lower(), name, value) for name, value in SECURITY_HEADERS)


def add_security_headers(resp):
    """Add each of :data:`SECURITY_HEADERS` the response lacks (what ``headers.setdefault`` does,
    in one pass over the headers: a miss in werkzeug's Headers raises and catches a KeyError)."""
    present = {key.lower() for key, _ in resp.headers}
    for lower, name, value in _SECURITY_HEADER_KEYS:
        if lower not in present:
            resp.headers.add(name, value)
    return resp
