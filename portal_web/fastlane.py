"""The status poll answered without Flask's request machinery.

Every phone waiting for its customer's M-Pesa PIN asks ``GET /api/portal/status/<id>`` every second
or two, so a busy server answers thousands a second. For that request Flask's own work (request
context, URL routing, session cookie, Flask-Limiter's and Flask-WTF's hooks, response processing)
cost ~350-450 µs, against ~75 µs for the answer itself, one SQL statement
(:func:`portal_web.api.status_body`). :class:`StatusFastLane` wraps ``app.wsgi_app`` and answers a
plain ``GET`` of that URL itself, with the view's own code and the same JSON (``app.json``), status
and headers. Every other request, and any status request out of the ordinary (HEAD, an empty id or
one with a slash, an error), goes to Flask unchanged, where the ``api.status`` view answers it alike.

Skipping Flask changes nothing for this request because:

* Flask-Limiter: the view has no limit and the app none app-wide (nothing counted, no headers);
* Flask-WTF: it checks only where a view asks (``WTF_CSRF_CHECK_DEFAULT`` is off);
* the session: the view never touches it, so Flask would neither set a cookie nor add ``Vary``;
* ``after_request``: the security headers are added here by the same function.

A hook added to the app later does not run here: add it here too if the status poll needs it.
"""
from __future__ import annotations

import logging

from flask import Flask

from . import add_security_headers, api

log = logging.getLogger(__name__)

PREFIX = "/api/portal/status/"


class StatusFastLane:
    """WSGI middleware: ``app.wsgi_app = StatusFastLane(app, app.wsgi_app)``."""

    def __init__(self, app: Flask, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO", "").startswith(PREFIX):
            response = self._status(environ)
            if response is not None:
                # what response(environ, start_response) sends, without its WSGI plumbing (its
                # header fix-ups concern redirects, HEAD and bodiless statuses: never this 200 or 404)
                start_response(response.status, response.headers.to_wsgi_list())
                return [response.get_data()]
        return self.wsgi_app(environ, start_response)

    def _status(self, environ):
        """The response to a status poll, or None to let Flask answer it."""
        request = self.app.request_class(environ)
        # request.path is PATH_INFO decoded as Flask's router decodes it; the route's converter
        # takes one non-empty path segment: anything else is Flask's to answer (404)
        checkout_request_id = request.path[len(PREFIX):]
        if not checkout_request_id or "/" in checkout_request_id:
            return None
        try:
            body = api.status_body(checkout_request_id, request, self.app.config["HOTSPOT"])
        except Exception:  # noqa: BLE001 - the view meets the same error, and Flask answers it (500, logged)
            log.debug("status poll for %s passed on to Flask", checkout_request_id, exc_info=True)
            return None
        response = self.app.json.response(api.no_such_payment(request) if body is None else body)
        if body is None:
            response.status_code = 404
        return add_security_headers(response)
