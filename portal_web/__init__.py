"""The HTTP face of hotspotd: splash page (/), portal API (/api/portal), callbacks, dashboard (/admin),
figures for Prometheus (/metrics).

``create_app(hotspot)`` builds the Flask app around a running :class:`hotspotd.daemon.Hotspot`;
the production server is waitress (see :mod:`portal_web.serve`).
"""
from __future__ import annotations

from flask import Flask, jsonify
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException

limiter = Limiter(key_func=get_remote_address, storage_uri="memory://", headers_enabled=True)
#: CSRF tokens for the dashboard's forms only: the JSON API and Daraja's callbacks carry none, so
#: nothing is checked by default and the admin blueprint calls ``csrf.protect()`` itself.
csrf = CSRFProtect()


def create_app(hotspot) -> Flask:
    app = Flask(__name__)
    app.config["HOTSPOT"] = hotspot
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    limiter.init_app(app)

    from . import admin, api, metrics_view, splash
    admin.configure(app, hotspot)
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    csrf.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(api.callbacks)
    app.register_blueprint(splash.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(metrics_view.bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 429:
            body = {"success": False, "message": "Too many requests; wait a minute and try again."}
        else:
            body = {"success": False, "message": exc.description or exc.name}
        return jsonify(body), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error")
        return jsonify({"success": False, "message": "Something went wrong on our side; please try again."}), 500

    @app.after_request
    def security_headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                "form-action *; frame-ancestors 'none'")
        return resp

    return app
