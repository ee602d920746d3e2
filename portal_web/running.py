"""The running daemon as the web layer sees it: :func:`hotspot`, the one way a view reaches it.

``create_app(hotspot)`` keeps the :class:`hotspotd.service.daemon.Hotspot` in the app's config.
Views use only these of it: ``config`` (read per request, so a reload reaches them), ``venues``
(:mod:`hotspotd.venues`), ``payments`` (:class:`hotspotd.payments.PaymentService`), ``cut_off``
(queue a cut at the routers), ``extend`` (more time, and
the new limits to routers that take a CoA-Request), ``opennds`` (the openNDS gateways:
:class:`hotspotd.routers.opennds.Gateways`), ``callback_token``, ``metrics``, and the health page's reading
(:func:`hotspotd.health.live.run`).
"""
from __future__ import annotations

from flask import current_app


def hotspot():
    """The daemon this app serves."""
    return current_app.config["HOTSPOT"]
