"""``hotspotd check``: is this installation able to run? One line per check, nothing changed.

Config (and its file's permissions), database (opens, intact, schema not newer than this code,
room to record payments), Daraja (a real OAuth call unless on the simulator), the callback URL's
form, each router's API login, and the ports the daemon will bind. A failure makes the command
exit non-zero; a warning does not. One thing may be written: a Daraja token the check had to fetch
goes to the database's shared tokens, so that a running daemon uses it rather than fetch another.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import sqlite3

from .. import config as config_mod
from .. import router_config
from ..storage import paths
from ..config import Config, parse_listen
from . import FAIL, OK, WARN, Check


def _check(state: str, name: str, detail: str) -> Check:
    """A check of the installation, whose key is its title."""
    return Check(name, name, state, detail)


def run(cfg: Config, path: str | None, daraja_timeout: float = 10.0, router_timeout: float = 5.0) -> list[Check]:
    results = [_config(cfg, path)]
    results += _database(cfg)
    results.append(_daraja(cfg, daraja_timeout))
    results += [_daraja(cfg, daraja_timeout, site) for site in cfg.sites.values() if site.account]
    results += _venues(cfg)
    results += _payees(cfg)
    results.append(_callback(cfg))
    results += _radius_clients(cfg)
    results += _routers(cfg, router_timeout)
    facts = _database_facts(cfg)
    results += _dashboard(facts, path)
    results += _ports(cfg, facts.get("database_id"))
    return results


def _payees(cfg: Config) -> list[Check]:
    """Outside the simulator every venue's splash page should name whom the prompt pays, as the
    prompt itself does: a customer tells a real prompt from a scam by it."""
    if cfg.mpesa.environment == "simulator":
        return []
    unnamed = [sid for sid in cfg.sites if not cfg.payee(sid).business_name]
    if not unnamed:
        return [_check(OK, "payee", "the splash page names whom the M-Pesa prompt pays")]
    where = "" if unnamed == [config_mod.DEFAULT_SITE] else f" (venues: {', '.join(unnamed)})"
    return [_check(WARN, "payee", f"no business_name{where}: set [mpesa] business_name (or the venue's) to the "
                                  "name Safaricom registered for the paybill or till, so customers can tell a real prompt")]


def _database_facts(cfg: Config) -> dict:
    """What the database says of itself, read-only: its ``database_id`` (a random id kept in the
    settings) and how many dashboard accounts it has. Empty when it cannot be read (the database
    check says why) or does not exist yet."""
    path = paths.sqlite_path(cfg.database.url)
    queries = ("SELECT value FROM setting WHERE key = 'database_id'", "SELECT count(*) FROM admin_user")
    try:
        if path is not None:
            if not os.path.exists(path):
                return {}
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=cfg.database.busy_timeout_ms / 1000)
            try:
                rows = [con.execute(q).fetchone() for q in queries]
            finally:
                con.close()
        else:
            from playhouse.db_url import connect as connect_url
            db = connect_url(cfg.database.url.replace("postgres://", "postgresql://", 1))
            try:
                rows = [db.execute_sql(q).fetchone() for q in queries]
            finally:
                db.close()
    except Exception:  # noqa: BLE001 - the database check reports what is wrong with it
        return {}
    return {"database_id": rows[0][0] if rows[0] else None, "admins": int(rows[1][0])}


def _dashboard(facts: dict, path: str | None) -> list[Check]:
    if "admins" not in facts:
        return []
    if facts["admins"]:
        return [_check(OK, "dashboard", f"{facts['admins']} account(s)")]
    config = f" --config {path}" if path else ""
    return [_check(WARN, "dashboard", f"no account yet, so nobody can sign in: run `hotspotd{config} admin "
                                      "create owner` (from a checkout: .venv/bin/hotspotd)")]


def _config(cfg: Config, path: str | None) -> Check:
    if not path:
        return _check(WARN, "config", "no file: built-in defaults (pass --config /etc/hotspotd/hotspotd.toml)")
    errors, warnings = config_mod.permission_problems(path, cfg)
    if errors:
        return _check(FAIL, "config", "; ".join(errors))
    if warnings:
        return _check(WARN, "config", "; ".join(warnings))
    return _check(OK, "config", f"{path} is valid")


def _database(cfg: Config) -> list[Check]:
    from ..storage import db as db_mod

    url = cfg.database.url
    path = paths.sqlite_path(url)
    if path is None:
        return [_postgres(url)]
    folder = os.path.dirname(path) or "."
    if not os.path.exists(path):
        if os.access(folder, os.W_OK) or (not os.path.exists(folder) and os.access(os.path.dirname(folder), os.W_OK)):
            return [_check(OK, "database", f"{path} will be created on first start")]
        return [_check(FAIL, "database", f"{path} does not exist and {folder} is not writable")]
    out = []
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=cfg.database.busy_timeout_ms / 1000)
        try:
            verdict = con.execute("PRAGMA quick_check").fetchone()[0]
            row = con.execute("SELECT value FROM setting WHERE key = 'schema_version'").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return [_check(FAIL, "database", f"{path}: {exc}")]
    version = int(row[0]) if row else 0
    if verdict != "ok":
        out.append(_check(FAIL, "database", f"{path} is damaged ({verdict}); restore a backup: hotspotd db restore"))
    elif version > db_mod.LATEST:
        out.append(_check(FAIL, "database", f"schema version {version} is newer than this hotspotd ({db_mod.LATEST})"))
    elif version < db_mod.LATEST:
        out.append(_check(OK, "database", f"{path} intact; schema {version} → {db_mod.LATEST} on next start"))
    else:
        out.append(_check(OK, "database", f"{path} intact, schema version {version}"))
    if not os.access(path, os.W_OK) or not os.access(folder, os.W_OK):
        out.append(_check(FAIL, "database", f"{path} or its folder is not writable by this user"))
    free = shutil.disk_usage(folder).free // (1024 * 1024)
    if free < cfg.database.min_free_mb:
        out.append(_check(FAIL, "disk", f"{free} MB free under {folder}: payments are refused below "
                                        f"{cfg.database.min_free_mb} MB"))
    else:
        out.append(_check(OK, "disk", f"{free} MB free under {folder}"))
    return out


def _postgres(url: str) -> Check:
    from playhouse.db_url import connect as connect_url
    try:
        db = connect_url(url.replace("postgres://", "postgresql://", 1))
        db.connect()
        db.execute_sql("SELECT 1")
        db.close()
    except Exception as exc:  # noqa: BLE001 - whatever the driver says is the answer
        return _check(FAIL, "database", f"cannot connect: {exc}".splitlines()[0])
    return _check(OK, "database", f"{paths.shown_url(url)}: PostgreSQL answers")


def _daraja(cfg: Config, timeout: float, site: config_mod.Site | None = None) -> Check:
    """The ``[mpesa]`` account's credentials, or those of ``site``'s own paybill or till."""
    from ..daraja.client import BASE_URLS, DarajaAuthError, DarajaClient, DarajaError

    m = cfg.mpesa
    name = f"daraja:{site.id}" if site else "daraja"
    if cfg.simulated:
        return _check(OK, name, "simulator environment: no call to Safaricom")
    account = site.account if site else cfg.default_account
    base = m.base_url or BASE_URLS[m.environment]
    db, tokens = _shared_tokens(cfg)
    client = DarajaClient(base, account.consumer_key, account.consumer_secret, account.shortcode, account.passkey,
                          transaction_type=account.transaction_type, timeout=timeout, tokens=tokens)
    try:
        client.check_credentials()
    except DarajaAuthError as exc:
        table = f"[[sites]] {site.id}" if site else "[mpesa]"
        return _check(FAIL, name, f"{base}: wrong consumer key or secret (Daraja refused them: {exc.message}); "
                                  f"check consumer_key and consumer_secret in {table}")
    except DarajaError as exc:
        return _check(FAIL, name, f"{base}: {exc.message or exc}")
    finally:
        client.close()
        if db is not None:
            db.close()
    return _check(OK, name, f"{m.environment}: {base} accepted the consumer key and secret of {account.shortcode}")


def _shared_tokens(cfg: Config):
    """(database, tokens): the daemon's shared Daraja tokens when its database has them, else
    (None, None). A running daemon's token, fetched with the same key and secret, proves them
    without asking Daraja for another, which would take the daemon's away (a new token may
    invalidate the previous one); a token the check does fetch is stored for the daemon to use."""
    from ..daraja.tokens import TABLE, DatabaseTokens
    from ..storage import db as db_mod

    path = paths.sqlite_path(cfg.database.url)
    if path is not None and not os.path.exists(path):
        return None, None
    db = None
    try:
        db = db_mod.unbound_database(cfg.database.url, cfg.database.busy_timeout_ms)
        db.connect()
        if db.table_exists(TABLE):
            return db, DatabaseTokens(db)
    except Exception:  # noqa: BLE001 - the database check reports what is wrong with it
        pass
    if db is not None:
        db.close()
    return None, None


def _venues(cfg: Config) -> list[Check]:
    """With several venues: a venue no [[radius.clients]] entry names has no router to let its
    customers in, yet its splash page would sell them time."""
    if not cfg.multi_site:
        return []
    served = {c.site for c in cfg.radius_clients}
    out = []
    for site in cfg.sites.values():
        if site.id in served:
            continue
        why = ("a router whose login page names no venue sells here" if site.id == config_mod.DEFAULT_SITE
               else "its splash page sells time")
        out.append(_check(WARN, f"venue {site.id}", f"no [[radius.clients]] entry has site = \"{site.id}\", but {why}: "
                          "add its routers, or give them the right site"))
    if not out:
        out.append(_check(OK, "venues", ", ".join(f"{s.id} ({s.name})" for s in cfg.sites.values())))
    return out


def _callback(cfg: Config) -> Check:
    url = cfg.mpesa.callback_url
    if cfg.simulated:
        return _check(OK, "callback URL", "simulator: callbacks stay on this machine")
    if not url:
        return _check(WARN, "callback URL", "not set: derived from portal.public_url, which Safaricom cannot reach")
    problem = config_mod.callback_url_problem(url, cfg.mpesa.environment)
    if problem:
        return _check(FAIL, "callback URL", problem)
    return _check(OK, "callback URL", f"{url.split('/cb/')[0]}/cb/<token>")


def _radius_clients(cfg: Config) -> list[Check]:
    """A router's RADIUS is answered only from [[radius.clients]]: with loopback alone (the sample
    file), every real router's requests are dropped without a word; so are those of a [[routers]]
    entry (MikroTik, CoovaChilli: openNDS asks no RADIUS) whose address no entry covers."""
    if not cfg.radius.enabled or cfg.simulated:
        return []
    networks = ", ".join(str(c.network) for c in cfg.radius_clients) or "nothing"
    out = []
    if all(c.network.network_address.is_loopback for c in cfg.radius_clients):
        out.append(_check(WARN, "radius clients", f"only {networks} (this machine) may ask: add each router's address "
                                                  "to [[radius.clients]] (hotspotd router-config prints what it needs)"))
    for r in cfg.routers:
        if r.kind == "opennds" or _ip(r.address) is None:   # a host name: its packets' address is not known here
            continue
        if not any(_in(r.address, c.network) for c in cfg.radius_clients):
            out.append(_check(WARN, "radius clients", f"router {r.name} at {r.address} is in no [[radius.clients]] "
                                                      f"entry ({networks}): its RADIUS requests are dropped "
                                                      "unanswered; add its address (or network) with its secret"))
    return out


def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _routers(cfg: Config, timeout: float) -> list[Check]:
    from ..routers.mikrotik import MikroTikRouter, RouterError, RouterUnavailable

    out = []
    for r in cfg.routers:
        name = f"router {r.name}"
        if r.disconnect_method == "agent":
            out.append(_check(OK, name, f"openNDS at {r.address}: authorised through authmon (level "
                                        f"{r.fas_secure_enabled}), cut-offs through hotspotd's deauth agent (not probed: "
                                        "the gateway calls hotspotd, never the reverse)"))
            continue
        if r.disconnect_method != "api":
            out.append(_check(OK, name, f"{r.kind} at {r.address}: cut-offs by Disconnect-Request to port {r.coa_port} "
                                        "(not probed: a NAS answers only for live sessions)"))
            continue
        with MikroTikRouter(r, timeout=min(timeout, float(r.timeout_seconds))) as api:
            try:
                info = api.ping()
            except (RouterUnavailable, RouterError) as exc:
                out.append(_check(FAIL, name, str(exc)))
                continue
            out.append(_check(OK, name, f"API login as {r.user!r} works: {info['identity']} RouterOS {info['version']}"))
            try:
                ready = api.readiness()
            except (RouterUnavailable, RouterError) as exc:
                out.append(_check(WARN, f"{name} setup", f"its configuration could not be read: {exc}"))
                continue
        out += [_check(state, f"{name} setup", text) for state, text in routeros_problems(cfg, r, ready)]
    if not cfg.routers and not cfg.simulated:
        out.append(_check(WARN, "routers", "none configured: paid devices are let in by RADIUS alone and expired "
                                           "ones are not cut off before their Session-Timeout"))
    return out


def _ports(cfg: Config, database_id: str | None = None) -> list[Check]:
    """The ports ``run`` binds are free, or held by a hotspotd that is already running (the
    portal answers with ``Server: hotspotd``: then its RADIUS ports are taken as its own too).
    A running hotspotd whose database is not the one checked here is named: the checks above
    were about another database than the one customers' payments go to."""
    host, port = parse_listen(cfg.portal.listen)
    portal = _bindable("portal", socket.SOCK_STREAM, host, port)
    running, theirs = _running_hotspotd(host, port) if portal.state == FAIL else (False, None)
    out = []
    if running:
        portal = _check(OK, "portal", f"{host}:{port}/tcp: hotspotd is running there")
        if database_id and theirs and theirs != database_id:
            out.append(_check(WARN, "database", f"the hotspotd running on {host}:{port} uses another database "
                                                f"than {paths.sqlite_path(cfg.database.url) or paths.shown_url(cfg.database.url)}: "
                                                "check with the --config the daemon runs with "
                                                "(scripts/demo: --config var/hotspotd.toml)"))
    out.insert(0, portal)
    if cfg.radius.enabled:
        for key in ("auth_port", "acct_port"):
            result = _bindable(f"radius {key[:4]}", socket.SOCK_DGRAM, cfg.radius.listen, cfg.radius.values[key])
            if running and result.state == FAIL:
                result = _check(OK, result.key, result.detail.split(":")[0] + f":{cfg.radius.values[key]}/udp: "
                                "held by the running hotspotd")
            out.append(result)
    return out


def _running_hotspotd(host: str, port: int) -> tuple[bool, str | None]:
    """Whether the portal on ``host:port`` is a hotspotd (it answers with ``Server: hotspotd``),
    and the ``database_id`` it says it uses (None from one too old to say), in one request."""
    import http.client
    import json
    target = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    conn = http.client.HTTPConnection(target, port, timeout=3)
    try:
        conn.request("GET", "/api/portal/instance")
        resp = conn.getresponse()
        body = resp.read()
        if resp.getheader("Server", "") != "hotspotd":
            return False, None
        try:
            theirs = json.loads(body).get("databaseId") if resp.status == 200 else None
        except (ValueError, AttributeError):
            theirs = None
        return True, theirs
    except OSError:
        return False, None
    finally:
        conn.close()


def _bindable(name: str, kind: int, host: str, port: int) -> Check:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"{host}:{port}/{'tcp' if kind == socket.SOCK_STREAM else 'udp'}"
    if port == 0:
        return _check(OK, name, f"{where}: any free port")
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except PermissionError:
            return _check(FAIL, name, f"{where}: not allowed to bind (ports below 1024 need CAP_NET_BIND_SERVICE)")
        except OSError as exc:
            return _check(FAIL, name, f"{where}: {exc.strerror} (is hotspotd already running?)")
    return _check(OK, name, f"{where} free")


MIN_MESSAGE_AUTH = (7, 15)       # /radius require-message-auth, and Message-Authenticator sent, from 7.15
MIN_RADIUS_TIMEOUT = 1.0         # seconds; RouterOS's default 300ms is below it (router_config.RADIUS_TIMEOUT)


def _seconds(text: str) -> float | None:
    """A RouterOS time (``300ms``, ``3s``, ``1m30s``, ``00:00:03``) in seconds; None if it is none."""
    if re.fullmatch(r"\d{1,2}:\d\d:\d\d(\.\d+)?", text):
        h, m, sec = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    parts = re.findall(r"(\d+)(ms|w|d|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    size = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return sum(int(n) * size[u] for n, u in parts)


def _version(text: str) -> tuple[int, ...]:
    numbers = []
    for part in text.split()[0].split(".") if text else []:
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        numbers.append(int(digits))
    return tuple(numbers)


def _yes(value) -> bool:
    return value is True or str(value).lower() in ("yes", "true")


def routeros_problems(cfg: Config, router, ready: dict) -> list[tuple[str, str]]:
    """What stands between this MikroTik (``ready``: :meth:`MikroTikRouter.readiness`) and hotspotd,
    each with the command that fixes it; ``[(OK, ...)]`` when nothing does."""
    out: list[tuple[str, str]] = []
    version = _version(ready.get("version", ""))
    client = next((c for c in cfg.radius_clients if _in(router.address, c.network)), None)
    if version and version < MIN_MESSAGE_AUTH:
        if client is None or client.require_message_authenticator:
            out.append((FAIL, f"RouterOS {ready['version']} sends no Message-Authenticator and hotspotd drops its "
                              "Access-Requests: upgrade (/system package update install) to 7.15 or later, or set "
                              "require_message_authenticator = false in this router's [[radius.clients]] entry"))
        else:
            out.append((WARN, f"RouterOS {ready['version']} sends no Message-Authenticator (allowed for it here); "
                              "7.15 or later closes BlastRADIUS: /system package update install"))
    mode = ready.get("device_mode")
    if mode is not None:
        if "hotspot" in mode and not _yes(mode["hotspot"]):
            out.append((FAIL, f"device-mode {mode.get('mode', '?')} has the hotspot off: /system device-mode update "
                              "hotspot=yes, then press the mode or reset button (or cut the power) within 5 minutes"))
        elif "hotspot" not in mode and str(mode.get("mode", "")) == "home":
            out.append((FAIL, "device-mode home limits what the router may run: /system device-mode update "
                              "mode=enterprise, then press the mode or reset button within 5 minutes"))
    if not ready.get("radius"):
        out.append((FAIL, "no /radius entry for the hotspot service: run the script from hotspotd router-config "
                          "mikrotik (it adds /radius add service=hotspot address=… secret=…)"))
    elif version >= MIN_MESSAGE_AUTH and client is not None and client.require_message_authenticator and not any(
            _yes(r.get("require-message-auth", False)) for r in ready["radius"]):
        out.append((WARN, "the /radius entry does not require Message-Authenticator in answers: "
                          "/radius set [find service~\"hotspot\"] require-message-auth=yes"))
    waits = [_seconds(str(r.get("timeout", ""))) for r in ready.get("radius") or []]
    if waits and all(w is not None and w < MIN_RADIUS_TIMEOUT for w in waits):
        out.append((WARN, f"the /radius timeout is {ready['radius'][0].get('timeout')}: a login hotspotd answers later "
                          "(a Pi writing to its SD card, or still booting after a power cut) fails: "
                          f"/radius set [find service~\"hotspot\"] timeout={router_config.RADIUS_TIMEOUT}"))
    if not _yes(ready.get("radius_incoming", {}).get("accept", False)):
        # read over the API, so its cuts go over the API too: a warning, for a change to disconnect = "coa"
        out.append((WARN, f"/radius incoming is off: cut-offs by Disconnect-Request cannot reach it: "
                          f"/radius incoming set accept=yes port={router.coa_port}"))
    missing = [p for p in ("read", "write", "api") if p not in ready.get("policy", [])]
    if missing:
        group = ready.get("group") or "?"
        out.append((FAIL, f"the API user {router.user!r} (group {group}) lacks the {','.join(missing)} policy: "
                          f"/user group set [find name={group}] policy=read,write,api,... (or use a group that has them)"))
    for profile in ready.get("profiles", []):
        name = profile.get("name", "?")
        if not _yes(profile.get("use-radius", False)):
            out.append((FAIL, f"hotspot profile {name} does not use RADIUS: /ip hotspot profile set [find name={name}] "
                              "use-radius=yes radius-accounting=yes"))
        if "mac" not in str(profile.get("login-by", "")).split(","):
            out.append((FAIL, f"hotspot profile {name} has no MAC login (returning devices must pay again): "
                              f"/ip hotspot profile set [find name={name}] login-by=mac,http-chap,http-pap,cookie"))
    return out or [(OK, f"RouterOS {ready.get('version') or '?'}, RADIUS, incoming CoA, the API user's policy and "
                        "the hotspot profile are as hotspotd needs them")]


def _in(address: str, network) -> bool:
    try:
        return ipaddress.ip_address(address) in network
    except ValueError:
        return False
