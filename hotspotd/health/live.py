"""The running daemon's health, for the dashboard's health page: is everything up, each call bounded.

:func:`run` reads what a running :class:`hotspotd.service.daemon.Hotspot` holds: ``config``,
``client`` and ``site_clients`` (Daraja), ``callback_url``/``callback_token``, ``routers`` and
``api_routers``, ``radius``, ``scheduler``, ``storage_problem()``, ``timekeeper.synchronized`` and ``readback``.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Callable
from urllib.parse import urlsplit

import peewee as pw

from .. import clock, disconnects
from ..config import callback_url_problem
from ..daraja.client import DarajaAuthError, DarajaConfigError, DarajaError
from ..reports import Sites, site_ids
from . import Check, bounded


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _mask_token(url: str, token: str) -> str:
    return url.replace(token, token[:4] + "…") if token else url


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


#: How long the health page waits for Daraja's OAuth.
DARAJA_CHECK_SECONDS = 6.0
#: RADIUS quiet for longer than this is worth a warning (interim updates come every few minutes).
RADIUS_QUIET_SECONDS = 15 * 60


def run(hotspot, now: float | None = None, site: Sites = None) -> list[Check]:
    """Everything the owner should see before customers complain, each call time-bounded:
    Daraja (OAuth with the configured key and secret), the callback URL, each router, RADIUS
    traffic, the scheduler, cut-offs that keep failing, and the clock.

    With ``site``, only that venue's routers and cut-offs, and the M-Pesa accounts its payments go
    to: ``daraja`` for the ``[mpesa]`` account, ``daraja:ID`` for a venue's own. RADIUS, the
    scheduler, the clock and storage are shared by every venue and always shown."""
    now = clock.now() if now is None else now
    ids = site_ids(site)
    routers = tuple(r for r in hotspot.routers if ids is None or r.site in ids)
    names = {r.name for r in routers}
    accounts = _daraja_accounts(hotspot, ids)
    calls: dict[str, tuple[Callable[[], Any], float]] = {}
    for key, _, client in accounts:
        calls[key] = (client.check_credentials, min(DARAJA_CHECK_SECONDS, client.timeout + 0.5))
    for r in hotspot.api_routers:
        if r.name in names:
            calls[f"router:{r.name}"] = (r.ping, r.timeout + 1.0)
    answers = bounded(calls)
    if accounts:
        checks = [_daraja_check(hotspot, client, key, title, answers.get(key)) for key, title, client in accounts]
    else:
        checks = [Check("daraja", "M-Pesa (Daraja)", "fail", "not started")]
    checks.append(_callback_check(hotspot))
    checks += _router_checks(hotspot, answers, routers, ids is not None)
    checks += [_radius_check(hotspot, now), _scheduler_check(hotspot), _disconnect_check(None if ids is None else names),
               _clock_check(hotspot, now), _storage_check(hotspot), _login_refusals_check(now, ids)]
    if hotspot.readback is not None and any(name in names for name in hotspot.readback.names()):
        checks.append(_readback_check(hotspot, names))
    return checks


def _daraja_accounts(hotspot, ids: tuple[str, ...] | None) -> list[tuple[str, str, Any]]:
    """``(check key, title, client)`` of each M-Pesa account the venues ``ids`` (None: all) are paid
    through: the ``[mpesa]`` one first, then each venue's own."""
    if hotspot.client is None:
        return []
    site_clients = hotspot.site_clients
    wanted = list(site_clients) if ids is None else list(ids)
    out: list[tuple[str, str, Any]] = []
    if ids is None or any(site_clients.get(sid, (hotspot.client,))[0] is hotspot.client for sid in wanted):
        out.append(("daraja", "M-Pesa (Daraja)", hotspot.client))
    for sid in wanted:
        client = site_clients.get(sid, (hotspot.client,))[0]
        if client is not hotspot.client:
            venue = hotspot.config.sites[sid].name if sid in hotspot.config.sites else sid
            out.append((f"daraja:{sid}", f"M-Pesa (Daraja), {venue}", client))
    return out


def _daraja_check(hotspot, client, key: str, title: str, answer) -> Check:
    where = f"{client.base_url}"
    env = hotspot.config.mpesa.environment
    table = "[mpesa]" if key == "daraja" else f"[[sites]] {key.split(':', 1)[1]}"
    if answer is None:
        return Check(key, title, "fail", "not started")
    kind, value = answer
    if kind == "ok":
        return Check(key, title, "ok", f"{env}: credentials accepted by {where}")
    if kind == "timeout":
        return Check(key, title, "fail", f"{env}: no answer from {where} within {value:.0f} s")
    if isinstance(value, DarajaAuthError):
        text = f"{env}: wrong consumer key or secret, Daraja refused them ({value.message}); check {table} in the config"
    elif isinstance(value, DarajaConfigError):
        text = f"{env}: {value.message}; check base_url in [mpesa]"
    elif isinstance(value, DarajaError):
        text = f"{env}: {where} cannot be reached ({value.message})"
    else:
        text = f"{env}: {type(value).__name__}: {value}"
    return Check(key, title, "fail", text)


def _callback_check(hotspot) -> Check:
    url = hotspot.callback_url or ""
    shown = _mask_token(url, hotspot.callback_token)
    if not url:
        return Check("callback", "Callback URL", "fail", "not set")
    if hotspot.config.simulated:
        return Check("callback", "Callback URL", "ok", f"{shown} (simulator: callbacks stay on this machine)")
    problem = callback_url_problem(url, hotspot.config.mpesa.environment)
    if problem:
        return Check("callback", "Callback URL", "fail", f"{shown}: {problem}")
    if _is_loopback_url(url):
        return Check("callback", "Callback URL", "fail",
                     f"{shown}: Safaricom cannot reach this machine's loopback address; set [mpesa] callback_url "
                     "to the portal's public https address")
    return Check("callback", "Callback URL", "ok", shown)


def _router_checks(hotspot, answers, routers, one_venue: bool = False) -> list[Check]:
    out = []
    if not routers:
        where = "for this venue" if one_venue else "configured"
        return [Check("routers", "Routers", "warn",
                      f"no [[routers]] {where}: devices whose time ran out are only stopped by the router's "
                      "own session timeout, not cut off")]
    api = {r.name for r in hotspot.api_routers}
    for r in routers:
        key = f"router:{r.name}"
        title = f"Router {r.name}"
        if r.kind == "opennds":
            out.append(Check(key, title, "info", f"openNDS at {r.address}: authorised through authmon, cut-offs "
                                                 "through hotspotd's deauth agent; the gateway calls hotspotd"))
            continue
        if r.name not in api:
            out.append(Check(key, title, "info", f"{r.kind} at {r.address}: cut-offs by RADIUS Disconnect-Request "
                                                 f"(port {r.coa_port}); configured, not checked from here"))
            continue
        kind, value = answers.get(key, ("error", "not checked"))
        if kind == "ok":
            bits = [value.get("identity") or "?", f"RouterOS {value.get('version') or '?'}"]
            if value.get("uptime"):
                bits.append(f"up {value['uptime']}")
            out.append(Check(key, title, "ok", f"{r.address}:{r.api_port} answers: " + ", ".join(bits)))
        elif kind == "timeout":
            out.append(Check(key, title, "fail", f"{r.address}:{r.api_port}: no answer within {value:.0f} s"))
        else:
            out.append(Check(key, title, "fail", str(value)))
    return out


def _radius_check(hotspot, now: float) -> Check:
    server = hotspot.radius
    if server is None:
        return Check("radius", "RADIUS", "warn", "RADIUS is off ([radius] enabled = false): routers cannot ask "
                                                 "who may go online")
    stats = server.stats
    counts = [f"{stats.get('access_accept', 0)} accepted", f"{stats.get('access_reject', 0)} rejected",
              f"{sum(v for k, v in stats.items() if k.startswith('acct_') and not k.endswith('_seconds'))} accounting"]
    items = []
    for address, count in sorted(server.no_message_authenticator.items()):
        items.append(f"{count} Access-Request(s) from the router at {address} without Message-Authenticator dropped "
                     "(RouterOS before 7.15 sends none): upgrade it to 7.15 or later, or set "
                     "require_message_authenticator = false in its [[radius.clients]] entry")
    if stats.get("dropped_unknown_client"):
        items.append(f"{stats['dropped_unknown_client']} request(s) from unknown routers dropped: "
                     "check [[radius.clients]] addresses and secrets")
    last = server.last_request_at
    if last is None:
        return Check("radius", "RADIUS", "warn", "no request since start; is the router's RADIUS server set to "
                                                 "this machine?", tuple(items))
    age = max(now - last, 0)
    state = "ok" if age <= RADIUS_QUIET_SECONDS and not items else "warn"
    return Check("radius", "RADIUS", state, f"last request {_ago(age)}; since start: {', '.join(counts)}",
                 tuple(items))


def _scheduler_check(hotspot) -> Check:
    s = hotspot.scheduler
    if s is None:
        return Check("scheduler", "Scheduler", "fail", "disabled: payments without a callback are never "
                                                       "reconciled and sessions never end on time")
    if not s.running:
        return Check("scheduler", "Scheduler", "fail", "not running")
    jobs = sorted(set(s.runs) | set(s.failures))
    items = tuple(f"{job}: {s.runs.get(job, 0)} run(s), {s.failures.get(job, 0)} failed" for job in jobs)
    failed = sum(s.failures.values())
    return Check("scheduler", "Scheduler", "warn" if failed else "ok",
                 f"running; {failed} failed run(s) since start (see the log)" if failed else "running", items)


def _disconnect_check(routers: set[str] | None = None) -> Check:
    """Failing cut-offs (at the routers named ``routers``; None: at every router)."""
    rows = [r for r in disconnects.problems() if routers is None or r.router in routers]
    if not rows:
        return Check("disconnects", "Cut-offs", "ok", "none failing")
    items = tuple(f"{r.mac} at {r.router}: {r.status}, {r.attempts} attempt(s): {r.last_error or ''}"
                  for r in rows[:20])
    return Check("disconnects", "Cut-offs", "fail", f"{len(rows)} device(s) could not be cut off", items)


#: how far back the health page looks for logins the routers refused
REFUSALS_WINDOW = 3600


def _login_refusals_check(now: float, ids: tuple[str, ...] | None) -> Check:
    """Devices the router sent back to the splash page with a refusal in the last hour (recorded by
    the splash page): a paid customer who is not online. The usual causes come with the check."""
    from ..storage.models import Entitlement, Event
    query = (Event.select(Event, Entitlement.site).join(Entitlement, join_type=pw.JOIN.LEFT_OUTER)
             .where((Event.kind == "router_login_refused") & (Event.at >= now - REFUSALS_WINDOW))
             .order_by(Event.at.desc()))
    if ids is not None:
        query = query.where(Entitlement.site.in_(ids))
    rows = list(query.limit(50))
    if not rows:
        return Check("router_logins", "Router logins", "ok", "no login refused by a router in the last hour")
    items = tuple(f"{clock.local(e.at).strftime('%H:%M')} {e.mac or ''}: {e.message}" for e in rows[:10])
    return Check("router_logins", "Router logins", "warn",
                 f"{len(rows)} login(s) refused by a router in the last hour: check the router's RADIUS secret "
                 "against [[radius.clients]], that this server's RADIUS answers the router's address, and on "
                 "RouterOS before 7.15 the Message-Authenticator setting", items)


def _storage_check(hotspot) -> Check:
    problem = hotspot.storage_problem()
    if problem:
        return Check("storage", "Storage", "fail", f"new payments are refused: {problem}")
    return Check("storage", "Storage", "ok", "enough free space to record payments")


def _clock_check(hotspot, now: float) -> Check:
    local = clock.local(now)
    if hotspot.timekeeper.synchronized is False:
        return Check("clock", "Clock", "warn",
                     f"server time {local:%Y-%m-%d %H:%M} Nairobi, but the clock is not NTP-synchronised: enable "
                     "systemd-timesyncd or chrony. hotspotd keeps sessions right through clock jumps, but days, "
                     "revenue and M-Pesa timestamps need the right time.")
    return Check("clock", "Clock", "info",
                 f"server time {local:%Y-%m-%d %H:%M} Nairobi ({clock.iso(now)}). Days and revenue use Nairobi "
                 "time; if this is not the time on your phone, fix the server clock (NTP): session ends and "
                 "M-Pesa timestamps depend on it.")


def _readback_check(hotspot, names: set[str]) -> Check:
    """The routers' latest read-back (:mod:`hotspotd.readback`): what had to be put right."""
    drifts = [d for name, d in sorted(hotspot.readback.last.items()) if name in names]
    if not drifts:
        return Check("readback", "Router read-back", "info", "not run yet: what each router says is online is "
                     "read back every few minutes (or now, with the button below)")
    items = []
    for d in drifts:
        if d.error:
            items.append(f"{d.router}: could not be read ({d.error})")
            continue
        bits = [f"{d.online} online"]
        for what, macs in (("cut (no time)", d.cut), ("logged back in", d.logged_in),
                           ("not logged back in", d.not_logged_in), ("logged in by other users", d.foreign)):
            if macs:
                bits.append(f"{len(macs)} {what}: " + ", ".join(macs[:5]) + ("…" if len(macs) > 5 else ""))
        if d.ended:
            bits.append(f"{d.ended} accounting session(s) the router no longer had, ended")
        items.append(f"{d.router} ({_ago(max(clock.now() - d.at, 0))}): " + "; ".join(bits))
    drifted = [d for d in drifts if d.error or d.corrections or d.not_logged_in or d.foreign]
    if not drifted:
        return Check("readback", "Router read-back", "ok", "the routers agree with what was sold", tuple(items))
    return Check("readback", "Router read-back", "warn", f"{len(drifted)} router(s) differed from what was sold "
                 "and were corrected where they could be", tuple(items))
