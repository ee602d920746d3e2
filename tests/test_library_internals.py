"""The private names of other libraries that hotspotd leans on, checked so that an upgrade which
changes them fails here, loudly, instead of at a venue.

* Flask-Limiter: ``portal_web._skip_idle_limiter_check`` reads ``limit_manager._blueprint_limits``
  and ``_meta_limits`` and unregisters ``_check_request_limit`` (a speed-up: see its docstring).
* waitress: ``Hotspot._stop_web`` closes every channel of the server's ``_map`` on the loop's
  thread through ``trigger.pull_trigger``, then ``task_dispatcher.shutdown()``.
* africastalking: ``hotspotd.sms.gateways.AfricasTalking`` points the SDK at another host (the
  simulator) by setting ``SMSService._baseUrl``; the SDK has no setting for it.
"""
from __future__ import annotations

import socket

import flask_limiter
import waitress
from flask import Flask
from waitress.server import create_server

from portal_web import _skip_idle_limiter_check, limiter


def test_flask_limiter_still_has_the_private_names_the_portal_reads():
    app = Flask(__name__)
    fresh = flask_limiter.Limiter(key_func=lambda: "x", storage_uri="memory://")
    fresh.init_app(app)
    assert isinstance(fresh.limit_manager._blueprint_limits, dict), flask_limiter.__version__
    assert hasattr(fresh, "_meta_limits"), flask_limiter.__version__
    # the hook the portal unregisters is the one init_app registered, by that name
    assert fresh._check_request_limit in app.before_request_funcs[None], flask_limiter.__version__


def test_the_portal_removes_the_app_wide_hook_and_only_it(hotspot):
    hooks = hotspot.app.before_request_funcs[None]
    assert limiter._check_request_limit not in hooks
    assert hooks, "the portal's own before-request hooks are still there"


def test_the_hook_stays_once_an_app_wide_limit_is_set():
    app = Flask(__name__)
    guarded = flask_limiter.Limiter(key_func=lambda: "x", storage_uri="memory://", default_limits=["5/minute"])
    guarded.init_app(app)
    import portal_web
    saved = portal_web.limiter
    portal_web.limiter = guarded
    try:
        _skip_idle_limiter_check(app)
    finally:
        portal_web.limiter = saved
    assert guarded._check_request_limit in app.before_request_funcs[None]


def test_waitress_still_has_the_private_names_the_daemon_stops_it_with():
    server = create_server(lambda environ, start: [], host="127.0.0.1", port=0)
    try:
        assert isinstance(server._map, dict), waitress.__name__
        assert server in server._map.values()                      # the listener is a channel of it
        assert callable(server.trigger.pull_trigger) and server.trigger in server._map.values()
        assert callable(server.task_dispatcher.shutdown)
    finally:
        for channel in list(server._map.values()):
            channel.close()
        server.task_dispatcher.shutdown()


def test_stopping_the_daemon_closes_a_kept_alive_connection(make_hotspot):
    hs = make_hotspot()
    host, port = hs._web.effective_host, hs._web.effective_port
    conn = socket.create_connection((host, port), timeout=5)
    try:
        conn.sendall(b"GET /api/portal/packages HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        hs.stop()
        conn.settimeout(5)
        rest = b"x"
        for _ in range(100):                                       # the rest of the answer, then EOF
            rest = conn.recv(65536)
            if not rest:
                break
        assert rest == b""                                         # closed by the server, not left open
        assert not hs._web_thread.is_alive()
    finally:
        conn.close()


def test_the_africastalking_sdk_still_builds_its_urls_from_base_url():
    from africastalking.SMS import SMSService

    service = SMSService("sandbox", "k")
    assert service._baseUrl == "https://api.sandbox.africastalking.com/version1"
    service._baseUrl = "http://127.0.0.1:9/version1"
    assert service._make_url("/messaging") == "http://127.0.0.1:9/version1/messaging"
