"""What an owner pastes into the router: a RouterOS script, the hotspot ``login.html``, a CoovaChilli config.

All three are plain text built from the frozen :class:`~hotspotd.config.Config` (no network, no
database), so ``hotspotd router-config`` can run on a laptop. Inputs that make the output useless
(no RADIUS client of the router's kind, no address for the hotspotd box, a portal URL customers
cannot reach, a secret the target syntax cannot carry) raise :class:`ValueError` with one line
saying what to pass or fix. Inputs that work but are risky (the default ``testing123`` secret, the
built-in portal URL, a generated uamsecret) become ``# WARNING:`` lines at the top of the output.
"""
from __future__ import annotations

import html
import ipaddress
import re
import secrets
import shlex
from dataclasses import dataclass
from urllib.parse import urlsplit

from .config import Config, RadiusClient, Router
from .identifiers import InvalidMac, normalize_mac

DEFAULT_SECRET = "testing123"
COMMENT = "hotspotd"  # tag on every RouterOS entry the script adds, so a re-run replaces them
API_USER = "hotspotd"  # the RouterOS user and group the script makes when [[routers]] names no user
#: what the API user's group may do: the cut-offs and logins write (/ip/hotspot/active, cookie,
#: ip-binding), `hotspotd check` reads; routers.md "RouterOS API": "the user's group needs the api policy".
#: Policies left out are off (help.mikrotik.com/docs/display/ROS/User, "User Groups").
API_POLICY = "read,write,api"
#: /radius timeout. RouterOS waits 300ms by default, then the hotspot login fails; hotspotd on a Pi
#: answers from SQLite on an SD card (synchronous=FULL: a payment's commit is an fsync) and, after a
#: power cut, the router is up long before the Pi has booted and its disk caught up: 3s covers
#: a slow answer without making a customer wait long when hotspotd is really down.
RADIUS_TIMEOUT = "3000ms"
#: routers.md "MikroTik as public evidence shows it": "/ip hotspot setup proposes 10.5.50.1/24 for the
#: router itself"; the customers' pool is the rest of that /24
HOTSPOT_SETUP_ROUTER = ipaddress.IPv4Address("10.5.50.1")
HOTSPOT_SETUP_NETWORK = ipaddress.IPv4Network("10.5.50.0/24")
#: Variables the MikroTik hotspot fills into login.html, sent to the portal under the same names.
MIKROTIK_LOGIN_VARS = ("mac", "ip", "link-login-only", "link-orig", "chap-id", "chap-challenge", "error")
_URL_SAFE = re.compile(r"[A-Za-z0-9._~:/%+,=@\[\]-]+")
# /etc/chilli/functions pastes values unquoted into shell and into chilli.conf: no spaces or quoting.
_COOVA_SAFE = re.compile(r"[A-Za-z0-9._~:/%+,=@^-]+")
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class _Plan:
    """The facts both router kinds need, resolved once with their warnings."""
    portal_root: str          # the splash page: public URL + "/"
    host: str                 # portal host name or IP
    host_ip: _IP | None       # the same when it is an IP literal
    port: int
    radius_address: _IP
    radius_origin: str        # where radius_address came from, for the comment
    secret: str
    router: Router | None
    coa_port: int
    warnings: tuple[str, ...]
    require_message_auth: bool = True   # the [[radius.clients]] entry drops requests without one


def mikrotik_script(cfg: Config, *, portal_url: str | None = None, radius_address: str | None = None,
                    router: str | Router | None = None, hotspotd_mac: str | None = None) -> str:
    """A RouterOS v7 script: RADIUS client, incoming CoA, hotspot profile flags, walled garden, the
    API user (group, user, service) hotspotd's logins and cut-offs use, and, with ``hotspotd_mac``,
    an ip-binding that lets the hotspotd box through when it sits behind the hotspot interface.

    ``portal_url`` overrides ``[portal] public_url``; ``radius_address`` is the hotspotd box as the
    router sees it (default: ``[radius] listen`` when specific, else the portal host when it is an
    IP); ``router`` is the name of a ``[[routers]]`` entry of kind mikrotik (its secret, coa_port,
    user, password, api_port and tls are used). Running the script twice leaves one entry of each.
    Raises ValueError when the script could not work.
    """
    plan = _plan(cfg, "mikrotik", portal_url, radius_address, router)
    if isinstance(plan.host_ip, ipaddress.IPv6Address) or isinstance(plan.radius_address, ipaddress.IPv6Address):
        raise ValueError("the MikroTik hotspot walled garden is IPv4 only: give IPv4 portal and RADIUS addresses")
    if plan.radius_address.is_loopback:
        raise ValueError(f"RADIUS address {plan.radius_address} is a loopback address the router cannot reach: "
                         "pass --radius-address with the hotspotd box's LAN address")
    if hotspotd_mac is not None:
        try:
            hotspotd_mac = normalize_mac(hotspotd_mac)
        except InvalidMac:
            raise ValueError(f"--hotspotd-mac {hotspotd_mac!r} is not a MAC address") from None
    warnings = list(plan.warnings)
    routers_own = [what for what, ip in (("portal", plan.host_ip), ("RADIUS", plan.radius_address))
                   if ip == HOTSPOT_SETUP_ROUTER]
    if routers_own:
        warnings.append(f"the {' and '.join(routers_own)} address {HOTSPOT_SETUP_ROUTER} is the router's own "
                        f"(/ip hotspot setup gives it {HOTSPOT_SETUP_ROUTER}/24): give the hotspotd box's address")
    if (hotspotd_mac is None and plan.radius_address in HOTSPOT_SETUP_NETWORK
            and plan.radius_address != HOTSPOT_SETUP_ROUTER):
        warnings.append(f"{plan.radius_address} is in the hotspot's network {HOTSPOT_SETUP_NETWORK}: if the hotspotd "
                        "box sits behind the hotspot interface, pass --hotspotd-mac with its MAC, or the hotspot "
                        "holds back its API calls")
    api_lines, api_warnings, toml_hint = _mikrotik_api(cfg, plan)
    warnings += api_warnings
    r = cfg.radius
    message_auth = " require-message-auth=yes" if plan.require_message_auth else ""
    out = _header("MikroTik RouterOS v7 hotspot settings", "mikrotik", cfg, plan, "#", warnings) + [
        "# Run it on a router whose hotspot already exists (IP > Hotspot > Hotspot Setup, or /ip hotspot setup):",
        "# upload it as hotspotd.rsc and run /import file-name=hotspotd.rsc, or paste it into a terminal.",
        f"# Running it again replaces what it added before (entries carry comment={COMMENT}).",
        "",
        *toml_hint,
        "# RADIUS: the hotspot asks hotspotd about each device (MAC first, then the login after payment)",
        "# and reports usage to it. The secret must equal the one in hotspotd.toml [[radius.clients]].",
        *(["# hotspotd drops Access-Requests without Message-Authenticator (BlastRADIUS): this needs RouterOS",
           "# 7.15 or later (require-message-auth); for an older one set require_message_authenticator = false",
           "# for this router in hotspotd.toml and run router-config again."] if plan.require_message_auth else
          ["# require_message_authenticator = false for this router in hotspotd.toml: upgrade to RouterOS 7.15+",
           "# and turn it back on (BlastRADIUS)."]),
        f"# timeout={RADIUS_TIMEOUT}: RouterOS waits 300ms by default; hotspotd on a Pi writes to an SD card and,",
        "# after a power cut, boots long after the router: a login it answers late would fail.",
        f"/radius remove [find comment={_ros(COMMENT)}]",
        f"/radius add service=hotspot address={plan.radius_address} secret={_ros(plan.secret)}"
        f" authentication-port={r.auth_port} accounting-port={r.acct_port} timeout={RADIUS_TIMEOUT}{message_auth}"
        f" comment={_ros(COMMENT)}",
        "",
        "# Let hotspotd end a session early (Disconnect-Request, RFC 5176) when its time or data runs out.",
        f"/radius incoming set accept=yes port={plan.coa_port}",
        "",
        "# The profile of every hotspot server: MAC login against hotspotd first; http-chap/http-pap for the",
        "# login the splash page makes after payment; the router obeys hotspotd's Acct-Interim-Interval.",
        ":if ([:len [/ip hotspot find]] = 0) do={ :error \"hotspotd: no hotspot server here;"
        " run /ip hotspot setup first\" }",
        ":foreach srv in=[/ip hotspot find] do={",
        "    :local prof [/ip hotspot get $srv profile]",
        "    /ip hotspot profile set [find name=$prof] login-by=mac,http-chap,http-pap,cookie use-radius=yes"
        " radius-accounting=yes radius-interim-update=received mac-auth-mode=mac-as-username"
        " radius-mac-format=XX:XX:XX:XX:XX:XX",
        "    :put (\"hotspotd: profile \" . $prof . \" set; its html-directory is \""
        " . [/ip hotspot profile get [find name=$prof] html-directory])",
        "}",
        "",
        *_walled_garden(plan, radius_address is not None),
        "",
        *_bypass(plan, hotspotd_mac),
        "",
        *api_lines,
        "",
        "# The splash page: replace login.html in that html-directory with the file written by",
        f"#   hotspotd router-config mikrotik --login-html login.html --portal-url {plan.portal_root}",
        "# (WinBox/WebFig Files: drag it into the folder; or scp login.html admin@ROUTER:HTML-DIRECTORY/login.html).",
        "# It sends the device to the portal with mac, ip, link-login-only, link-orig, chap-id and chap-challenge.",
    ]
    return "\n".join(out) + "\n"


def _mikrotik_api(cfg: Config, plan: _Plan) -> tuple[list[str], list[str], list[str]]:
    """The API side hotspotd's logins and cut-offs use: (script lines, warnings, hotspotd.toml hint).

    A group with only ``read,write,api``; the user in it, allowed from the hotspotd box only; the
    ``api`` service (``api-ssl`` with ``tls``) open to that box. A user the script did not make
    (no ``comment=hotspotd``) is left as it is, so the owner's own account never loses its rights.
    The password never reaches a warning (the CLI copies warnings to stderr, which may be logged).
    """
    chosen = plan.router
    user = chosen.user if chosen and chosen.user else API_USER
    password = chosen.password if chosen and chosen.password else ""
    warnings, hint = [], []
    if not password:
        password = secrets.token_urlsafe(18)
        where = f'the [[routers]] entry "{chosen.name}"' if chosen else 'a [[routers]] entry with kind = "mikrotik"'
        warnings.append(f"no API password in hotspotd.toml: the /user lines below set one generated just now; "
                        f"copy it into {where} (password = ...), or hotspotd cannot log in to the router")
    if chosen is None or not chosen.user or not chosen.password:
        hint = ["# For hotspotd.toml (the API user this script makes):", "#   [[routers]]",
                f'#   name = "{chosen.name if chosen else "router"}"', '#   kind = "mikrotik"',
                f'#   address = "{chosen.address if chosen else "ROUTER ADDRESS"}"',
                f'#   user = "{user}"', f'#   password = "{password}"', ""]
    box = f"{plan.radius_address}/32"
    tls = bool(chosen and chosen.tls)
    service, port = ("api-ssl" if tls else "api"), (chosen.api_port if chosen else 8728)
    if service == "api-ssl" and port == 8728:
        raise ValueError(f'[[routers]] "{chosen.name}" has tls = true on port 8728, the plain api\'s: '
                         "set api_port = 8729 (api-ssl's port)")
    g, u, c = _ros(API_USER), _ros(user), _ros(COMMENT)
    lines = [
        f"# The API: hotspotd logs paid devices in and cuts expired ones off as the user {user}, whose",
        f"# group has only {API_POLICY} and who may log in from the hotspotd box ({plan.radius_address}) only.",
        f":if ([:len [/user group find name={g}]] = 0) do={{ /user group add name={g} policy={API_POLICY}"
        f" comment={c} }} else={{ /user group set [find name={g}] policy={API_POLICY} }}",
        f":if ([:len [/user find name={u}]] = 0) do={{",
        f"    /user add name={u} group={g} password={_ros(password)} address={box} comment={c}",
        "} else={",
        f"    :if ([:len [/user find name={u} comment={c}]] = 0) do={{",
        f"        :put (\"hotspotd: the user {_ros(user)[1:-1]} was not made by this script and is left as it is:"
        f" give it group {API_USER}, or set comment={COMMENT} on it and run this again\")",
        "    } else={",
        f"        /user set [find name={u} comment={c}] group={g} password={_ros(password)} address={box}",
        "    }",
        "}",
        f"# The {service} service, open to the hotspotd box only (add other addresses after a comma if other",
        "# tools of yours use it).",
        f"/ip service set {service} disabled=no port={port} address={box}",
    ]
    if service == "api-ssl":
        lines += ["# api-ssl needs a certificate hotspotd trusts ([[routers]] tls_ca), e.g.:",
                  "#   /certificate add name=api common-name=ROUTER-ADDRESS; /certificate sign api;"
                  " /ip service set api-ssl certificate=api"]
    return lines, warnings, hint


def _bypass(plan: _Plan, mac: str | None) -> list[str]:
    lines = ["# The hotspotd box itself, when it is plugged in behind the hotspot interface: the hotspot would",
             "# hold back its API calls to the router until it logged in. By MAC (--hotspotd-mac): a binding by",
             "# address alone would let through any device that takes that address.",
             f"/ip hotspot ip-binding remove [find comment={_ros(COMMENT)}]"]
    if mac:
        lines.append(f"/ip hotspot ip-binding add mac-address={mac} type=bypassed comment={_ros(COMMENT)}")
    else:
        lines.append("# (none: run router-config again with --hotspotd-mac if the box sits behind the hotspot)")
    return lines


def _walled_garden(plan: _Plan, radius_given: bool) -> list[str]:
    port = f"protocol=tcp dst-port={plan.port}"
    lines = [
        "# Walled garden: what a device may reach before it has paid. The splash page loads nothing from",
        "# other sites (no CDN, fonts or analytics), so the portal is the only entry needed.",
        "# M-Pesa needs none: the STK prompt reaches the phone over the mobile network, not this Wi-Fi,",
        "# and Safaricom's callback reaches hotspotd over the internet, not through the hotspot.",
        "# Do not add captive-portal probe hosts (connectivitycheck.gstatic.com, captive.apple.com, ...):",
        "# failing them is how phones notice the hotspot and open the splash page.",
        f"/ip hotspot walled-garden remove [find comment={_ros(COMMENT)}]",
        f"/ip hotspot walled-garden add dst-host={_ros(plan.host)} comment={_ros(COMMENT)}",
        "# The IP walled garden also lets HTTPS and non-proxied ports through (only the portal's port).",
        f"/ip hotspot walled-garden ip remove [find comment={_ros(COMMENT)}]",
    ]
    if plan.host_ip is not None:
        lines.append(f"/ip hotspot walled-garden ip add action=accept dst-address={plan.host_ip} {port}"
                     f" comment={_ros(COMMENT)}")
    else:
        lines.append("# A host name: the router resolves it; devices resolve it through the router's DNS.")
        lines.append(f"/ip hotspot walled-garden ip add action=accept dst-host={_ros(plan.host)} {port}"
                     f" comment={_ros(COMMENT)}")
        if radius_given:
            lines.append("# hotspotd's own address (--radius-address), for when the portal name resolves to it.")
            lines.append(f"/ip hotspot walled-garden ip add action=accept dst-address={plan.radius_address}"
                         f" {port} comment={_ros(COMMENT)}")
    return lines


def mikrotik_login_html(portal_url: str, site: str | None = None) -> str:
    """The hotspot's ``login.html``: hands the router's variables to the portal's ``/`` by GET,
    with the router's venue (``site``: a ``[[sites]]`` id; None: the default venue).

    Submits itself by script; a visible button does it without JavaScript. MikroTik fills each
    ``$(name)``; chap-id and chap-challenge arrive octal-escaped (``\\371``) and the portal decodes them.
    """
    root, _, _, _ = _portal(portal_url)
    fields = "\n".join(f'<input type="hidden" name="{n}" value="$({n})">' for n in MIKROTIK_LOGIN_VARS)
    if site:
        fields += f'\n<input type="hidden" name="site" value="{html.escape(site)}">'
    return f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="pragma" content="no-cache">
<meta http-equiv="expires" content="-1">
<title>Wi-Fi</title>
</head>
<body>
<!-- hotspotd: made by `hotspotd router-config mikrotik --login-html`; sends this device to the splash page. -->
<form name="hotspotd" action="{html.escape(root)}" method="get">
<input type="hidden" name="router" value="mikrotik">
{fields}
<p><button type="submit">Continue</button></p>
</form>
<script>document.forms.hotspotd.submit();</script>
</body>
</html>
"""


def coova_config(cfg: Config, *, portal_url: str | None = None, radius_address: str | None = None,
                 router: str | Router | None = None) -> str:
    """Lines for CoovaChilli's ``/etc/chilli/config`` (HS_* shell variables), chilli.conf equivalents below.

    Same inputs as :func:`mikrotik_script`, with a ``[[routers]]`` entry of kind coova. Its
    ``uamsecret`` is used; when there is none a random one is generated, printed and flagged by a
    warning, since hotspotd.toml must then be given the same value.
    """
    plan = _plan(cfg, "coova", portal_url, radius_address, router)
    warnings = list(plan.warnings)
    uamsecret = plan.router.uamsecret if plan.router else ""
    toml_hint: list[str] = []
    if not uamsecret:
        uamsecret = secrets.token_hex(16)
        where = (f'the [[routers]] entry "{plan.router.name}"' if plan.router
                 else 'a [[routers]] entry with kind = "coova"')
        warnings.append(f"no uamsecret in hotspotd.toml: HS_UAMSECRET below was generated just now; put "
                        f'uamsecret = "{uamsecret}" in {where}, or the portal cannot log devices in')
        if not plan.router:
            toml_hint = ["# For hotspotd.toml:", "#   [[routers]]", '#   name = "chilli"', '#   kind = "coova"',
                         '#   address = "ROUTER ADDRESS"', f'#   uamsecret = "{uamsecret}"', ""]
    for label, value in (("RADIUS secret", plan.secret), ("uamsecret", uamsecret)):
        if not _COOVA_SAFE.fullmatch(value):
            raise ValueError(f"the {label} has characters /etc/chilli/functions cannot pass on (spaces, quotes, "
                             "$, #, ...): use letters, digits and - _ . only")
    r = cfg.radius
    nasid = re.sub(r"[^A-Za-z0-9_.-]", "_", plan.router.name) if plan.router else ""
    q = shlex.quote
    out = _header("CoovaChilli settings for /etc/chilli/config", "coova", cfg, plan, "#", warnings) + [
        "# Merge these lines into /etc/chilli/config (keep your own HS_LANIF, HS_NETWORK, HS_NETMASK,",
        "# HS_UAMLISTEN, HS_UAMPORT) and restart chilli; /etc/chilli/functions turns them into chilli options.",
        "# The equivalent chilli.conf lines are at the end, for setups that write chilli.conf by hand.",
        "",
        *toml_hint,
        "# RADIUS: hotspotd answers MAC authentication and the login after payment, and takes accounting.",
        f"HS_RADIUS={plan.radius_address}",
        "# /etc/chilli/defaults sets HS_RADIUS2=localhost (used as ${HS_RADIUS2:-$HS_RADIUS}): point it at hotspotd too.",
        f"HS_RADIUS2={plan.radius_address}",
        f"HS_RADSECRET={q(plan.secret)}",
        f"HS_RADAUTH={r.auth_port}",
        f"HS_RADACCT={r.acct_port}",
        "# Settings come from this file, not from RADIUS (ChilliSpot-Config) or a URL.",
        "HS_RADCONF=off",
        *([f"HS_NASID={nasid}"] if nasid else []),
        "HS_MACAUTH=on",
        "# hotspotd ends sessions early with Disconnect-Request from the HS_RADIUS address.",
        f"HS_COAPORT={plan.coa_port}",
        "",
        "# Portal: new devices go to hotspotd's splash page with res, uamip, uamport, challenge, mac, ip,",
        "# userurl, ... in the query string. No intermediate homepage.",
        f"HS_UAMSERVER={q(plan.host)}",
        f"HS_UAMFORMAT={q(plan.portal_root)}",
        "HS_UAMHOMEPAGE=",
        f"HS_UAMSECRET={q(uamsecret)}",
        "# Walled garden: the splash page loads nothing from other sites. M-Pesa needs no entry: the STK",
        "# prompt reaches the phone over the mobile network, not this Wi-Fi.",
        f"HS_UAMALLOW={q(plan.host)}",
        *([f"HS_UAMDOMAINS={q(plan.host)}"] if plan.host_ip is None else []),
        "",
        "# chilli.conf equivalent:",
        f"#   radiusserver1 {plan.radius_address}",
        f"#   radiusserver2 {plan.radius_address}",
        f"#   radiussecret {plan.secret}",
        f"#   radiusauthport {r.auth_port}",
        f"#   radiusacctport {r.acct_port}",
        *([f"#   radiusnasid {nasid}"] if nasid else []),
        "#   macauth",
        f"#   coaport {plan.coa_port}",
        f"#   uamserver {plan.portal_root}",
        f"#   uamsecret {uamsecret}",
        f"#   uamallowed {plan.host}",
        *([f"#   uamdomain {plan.host}"] if plan.host_ip is None else []),
    ]
    return "\n".join(out) + "\n"


def _header(title: str, kind: str, cfg: Config, plan: _Plan, c: str,
            warnings: list[str] | None = None) -> list[str]:
    router = f' (router "{plan.router.name}")' if plan.router else ""
    lines = [f"{c} hotspotd: {title}", f"{c} Made by `hotspotd router-config {kind}` from {cfg.source}{router}."]
    lines += [f"{c} WARNING: {w}" for w in (plan.warnings if warnings is None else warnings)]
    lines += [f"{c} Portal (splash page): {plan.portal_root}",
              f"{c} RADIUS server (hotspotd): {plan.radius_address} ({plan.radius_origin}),"
              f" auth {cfg.radius.auth_port}, acct {cfg.radius.acct_port}"]
    return lines


def _plan(cfg: Config, kind: str, portal_url: str | None, radius_address: str | None,
          router: str | Router | None) -> _Plan:
    warnings = []
    if not cfg.radius.enabled:
        warnings.append("[radius] enabled = false in hotspotd.toml: nobody will answer this router")
    if portal_url is None:
        portal_url = cfg.portal.public_url
        if "public_url" not in cfg.raw.get("portal", {}):
            warnings.append(f"[portal] public_url is not set, so the built-in {portal_url} is used: "
                            "check it, or pass --portal-url")
    root, host, host_ip, port = _portal(portal_url)
    if host == "localhost" or host_ip is not None and (host_ip.is_loopback or host_ip.is_unspecified):
        raise ValueError(f"portal URL {portal_url}: customers' devices cannot reach {host}; "
                         "set [portal] public_url or pass --portal-url with the address they use")
    chosen = _router(cfg, kind, router)
    address, origin = _radius_address(cfg, radius_address, host_ip)
    client = _client(cfg, kind, chosen)
    secret = chosen.secret if chosen and chosen.secret else client.secret
    if chosen and chosen.secret and chosen.secret != client.secret:
        warnings.append(f'[[routers]] "{chosen.name}" secret differs from its [[radius.clients]] secret; '
                        "the router uses one secret for both, so make them equal")
    if chosen is None and client.network.network_address.is_loopback:
        warnings.append(f"hotspotd answers RADIUS from {client.network} only (this machine): a router elsewhere "
                        "is silently ignored; add its address (or its network) to [[radius.clients]] and run "
                        "this again")
    if chosen and _ip(chosen.address) is not None and _ip(chosen.address) not in client.network:
        warnings.append(f'hotspotd answers RADIUS from {client.network} only, not from "{chosen.name}" at '
                        f"{chosen.address}: add its address to [[radius.clients]]")
    if secret == DEFAULT_SECRET:
        warnings.append(f'the RADIUS secret is the default "{DEFAULT_SECRET}": set a long random one in '
                        "hotspotd.toml [[radius.clients]] and run this again")
    return _Plan(root, host, host_ip, port, address, origin, secret, chosen,
                 chosen.coa_port if chosen else 3799, tuple(warnings), client.require_message_authenticator)


def _portal(url: str) -> tuple[str, str, _IP | None, int]:
    """(portal root with a trailing slash, host, host as IP or None, port) or ValueError."""
    problem = ValueError(f"portal URL {url!r}: expected http(s)://host[:port][/path], "
                         "without query, fragment, spaces or quotes")
    parts = urlsplit(url.strip())
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise problem from None
    if (parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
            or parts.username or not _URL_SAFE.fullmatch(parts.netloc + parts.path)):
        raise problem
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/", parts.hostname, _ip(parts.hostname), port


def _router(cfg: Config, kind: str, wanted: str | Router | None) -> Router | None:
    if isinstance(wanted, Router):
        chosen = wanted
    elif wanted is not None:
        chosen = next((r for r in cfg.routers if r.name == wanted), None)
        if chosen is None:
            names = ", ".join(r.name for r in cfg.routers) or "none"
            raise ValueError(f"no [[routers]] entry named {wanted!r} in {cfg.source} (there: {names})")
    else:
        of_kind = [r for r in cfg.routers if r.kind == kind]
        if len(of_kind) > 1:
            raise ValueError(f"several [[routers]] of kind {kind} ({', '.join(r.name for r in of_kind)}): "
                             "choose one with --router NAME")
        return of_kind[0] if of_kind else None
    if chosen.kind != kind:
        raise ValueError(f"[[routers]] {chosen.name!r} is of kind {chosen.kind}, not {kind}")
    return chosen


def _radius_address(cfg: Config, given: str | None, portal_ip: _IP | None) -> tuple[_IP, str]:
    if given is not None:
        address = _ip(given)
        if address is None or address.is_unspecified:
            raise ValueError(f"--radius-address {given!r} is not an IP address")
        return address, "as given"
    listen = _ip(cfg.radius.listen)
    if listen is not None and not listen.is_unspecified:
        return listen, "[radius] listen"
    if portal_ip is not None:
        return portal_ip, "the portal's address; pass --radius-address if the router reaches hotspotd elsewhere"
    raise ValueError("cannot tell the hotspotd box's address (the portal URL is a name and [radius] listen "
                     "is a wildcard): pass --radius-address with the address the router reaches it at")


def _client(cfg: Config, kind: str, router: Router | None) -> RadiusClient:
    clients = [c for c in cfg.radius_clients if c.kind == kind]
    if not clients:
        raise ValueError(f"no [[radius.clients]] entry of kind {kind} in {cfg.source}: add one with the "
                         "router's address and a shared secret, so hotspotd answers it")
    address = _ip(router.address) if router else None
    return next((c for c in clients if address is not None and address in c.network), clients[0])


def _ip(text: str) -> _IP | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _ros(value: str) -> str:
    """A RouterOS string literal: double quotes, with \\ " $ ? and non-printable bytes escaped."""
    out = []
    for ch in value:
        if ch in '\\"$?':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.extend(f"\\{b:02X}" for b in ch.encode())
    return '"' + "".join(out) + '"'


# --- openNDS ------------------------------------------------------------------------------
#: what the agent and authmon read from the config with ``awk -F"<option> "``: comments in the
#: Debian file must never hold an option name followed by a space (reference/opennds.md P5)
OPENNDS_FORMATS = ("uci", "debian", "agent")


def opennds_config(cfg: Config, *, portal_url: str | None = None, router: str | Router | None = None,
                   fmt: str = "uci") -> str:
    """openNDS settings with hotspotd as its FAS: ``uci`` (OpenWrt ``/etc/config/opennds``),
    ``debian`` (``/etc/opennds/opennds.conf``, the legacy ``option value`` format) or ``agent``
    (hotspotd's deauth agent, a POSIX shell script for ``/etc/opennds/hotspotd-agent.sh``)."""
    if fmt not in OPENNDS_FORMATS:
        raise ValueError(f"--format {fmt!r}: one of {', '.join(OPENNDS_FORMATS)}")
    chosen = _router(cfg, "opennds", router)
    if chosen is None:
        raise ValueError(f'no [[routers]] entry of kind "opennds" in {cfg.source}: add one with name, address, '
                         "faskey (e.g. `openssl rand -hex 16`) and fas_secure_enabled")
    portal_url = portal_url or cfg.portal.public_url
    root, host, host_ip, port = _portal(portal_url)
    scheme = urlsplit(root).scheme
    level = chosen.fas_secure_enabled
    if level == 3 and scheme != "https":
        raise ValueError(f"portal URL {portal_url}: fas_secure_enabled 3 needs an https portal URL with a "
                         "certificate the gateway trusts (authmon's PHP checks it)")
    if level == 1 and scheme != "http":
        raise ValueError(f"portal URL {portal_url}: openNDS uses https only at fas_secure_enabled 3")
    fas_ip = _ip(chosen.fas_address) if chosen.fas_address else host_ip
    if fas_ip is None:
        raise ValueError(f"the portal URL's host {host} is a name: set fas_address in the [[routers]] entry "
                         f'"{chosen.name}" to the IP the gateway reaches hotspotd at (its firewall needs an IP)')
    path = urlsplit(root).path + f"opennds/{chosen.name}/"
    options = [("gatewayinterface", chosen.gateway_interface), ("gatewayname", chosen.name),
               ("enable_serial_number_suffix", "0"), ("gatewayfqdn", "disable"), ("dhcp_default_url_enable", "0"),
               ("login_option_enabled", "0"), ("fasremoteip", str(fas_ip)),
               *([("fasremotefqdn", host)] if host_ip is None else []), ("fasport", str(port)), ("faspath", path),
               ("fas_secure_enabled", str(level)), ("faskey", chosen.faskey), ("checkinterval", "10"),
               ("debuglevel", "1")]
    if fmt == "agent":
        return _opennds_agent(chosen)
    if fmt == "debian":
        # no comment here may name an option: the scripts read this file with awk -F"<option> "
        out = ["# hotspotd: openNDS settings, Debian format, as /etc/opennds/opennds.conf",
               f"# Made by hotspotd router-config from {cfg.source} for the router {chosen.name}.",
               f"# The customer's page is {root}, served by hotspotd.",
               *(["# WARNING: level 1 has no channel back to this gateway: sessions last as long as its own",
                  "# session setting allows, and hotspotd cannot end them early. Prefer level 3."] if level == 1 else []),
               *[f"{k} {v}" for k, v in options],
               f"#nat_traversal_poll_interval {chosen.poll_seconds}",
               "FirewallRuleSet authenticated-users {", "}",
               "FirewallRuleSet preauthenticated-users {", "}",
               "FirewallRuleSet users-to-router {",
               "    FirewallRule allow udp port 53", "    FirewallRule allow tcp port 53",
               "    FirewallRule allow udp port 67", "}"]
        return "\n".join(out) + "\n"
    out = ["# hotspotd: openNDS settings for OpenWrt, /etc/config/opennds (then: service opennds restart)",
           f"# Made by `hotspotd router-config opennds` from {cfg.source} (router \"{chosen.name}\").",
           f"# hotspotd is openNDS's FAS at fas_secure_enabled {level}; the customer's page is {root}.",
           "# Walled garden: openNDS lets unpaid clients reach fasremoteip:fasport (the splash page) and",
           "# nothing else. M-Pesa needs no entry: the STK prompt reaches the phone over the mobile network.",
           *(["# Level 3 needs php-cli and php-openssl on the router (opkg install php8-cli php8-mod-openssl),",
              "# and the deauth agent: `hotspotd router-config opennds --format agent` > /etc/opennds/hotspotd-agent.sh,",
              "# started after openNDS (e.g. from /etc/rc.local: sh /etc/opennds/hotspotd-agent.sh &)."]
             if level == 3 else
             ["# WARNING: level 1 has no channel back to the gateway: the owner's disconnect cannot reach it,",
              "# and sessions last the gateway's sessiontimeout. Prefer fas_secure_enabled 3."]),
           "", "config opennds", "\toption enabled '1'",
           *[f"\toption {k} '{v}'" for k, v in options],
           f"\toption nat_traversal_poll_interval '{chosen.poll_seconds}'",
           "\tlist users_to_router 'allow udp port 53'", "\tlist users_to_router 'allow udp port 67'"]
    return "\n".join(out) + "\n"


def _opennds_agent(router: Router) -> str:
    mac = ":".join(["[0-9a-f][0-9a-f]"] * 6)
    nonce = "[0-9a-f]" * 16
    awk_mac = ":".join(["[0-9a-f][0-9a-f]"] * 6)          # no {n} intervals: older mawk lacks them
    return f"""#!/bin/sh
# hotspotd's agent for the openNDS gateway "{router.name}" (openNDS 9.10 has no remote deauth).
# Every {router.poll_seconds} s it asks hotspotd, over openNDS's own level-3 channel (an HTTPS POST
# auth_get=custom from libopennds.sh, to the FAS URL in the config), which devices to cut off,
# runs `ndsctl deauth` for each MAC (nothing else is ever run) and reports them done. When hotspotd
# asks for the client list (its read-back), it sends the MACs `ndsctl json` lists as Authenticated
# and Preauthenticated, signed with the faskey. Only words that are MACs go in and out.
# It holds the faskey: keep it root's only (chmod 700).
# Start it after openNDS, as root, e.g. from /etc/rc.local: sh /etc/opennds/hotspotd-agent.sh &
set -f
lib=/usr/lib/opennds/libopennds.sh
key={router.faskey}
clients() {{
    # "state mac" per client, from ndsctl json's one-field-per-line output; "ok" once it was read
    listed=$(ndsctl json 2>/dev/null | awk -F'"' '
        NF == 5 && $2 == "client_list_length" {{ ok = 1 }}
        NF == 5 && $2 == "mac" && $3 == ":" {{ mac = tolower($4); if (mac !~ /^{awk_mac}$/) mac = "" }}
        NF == 5 && $2 == "state" && $3 == ":" {{ if (mac != "" && $4 ~ /^[A-Za-z]+$/) print $4, mac; mac = "" }}
        END {{ if (ok) print "ok" }}')
    case "$listed" in
        *ok) ;;
        *) return ;;
    esac
    auth=""
    pre=""
    set -- $listed
    while [ $# -ge 2 ]; do
        case "$2" in
            {mac})
                case "$1" in
                    Authenticated) auth="$auth $2" ;;
                    Preauthenticated) pre="$pre $2" ;;
                esac ;;
        esac
        shift 2
    done
    body="auth$auth pre$pre"
    sig=$(printf '%s' "$nonce $body $key" | sha256sum | cut -c1-64)
    "$lib" send_to_fas_custom "clients $nonce $sig $body" >/dev/null 2>&1
}}
while true; do
    reply=$("$lib" send_to_fas_custom deauth_poll 2>/dev/null)
    set -- $reply
    if [ "$1" = "deauth" ]; then
        shift
        done_list=""
        for mac in "$@"; do
            case "$mac" in
                {mac}) ;;
                *) continue ;;
            esac
            out=$(ndsctl deauth "$mac" 2>&1)
            case "$out" in
                *locked*) continue ;;
            esac
            done_list="$done_list $mac"
        done
        [ -n "$done_list" ] && "$lib" send_to_fas_custom "deauth_done$done_list" >/dev/null 2>&1
    elif [ "$1" = "list" ] && [ $# -eq 2 ]; then
        case "$2" in
            {nonce}) nonce=$2; clients ;;
        esac
    fi
    sleep {router.poll_seconds}
done
"""
