"""Configuration: one schema drives defaults, type checks, env overrides and error messages.

``load(path)`` reads the TOML file (or only the embedded defaults when ``path`` is None),
applies the environment overrides and returns a frozen :class:`Config`. Any problem raises
:class:`ConfigError` whose message is one line naming the file, the table, the key and the fix.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from limits import parse_many

from .storage import paths

#: The venue every install has: its name is [portal] site_name and its M-Pesa account [mpesa].
DEFAULT_SITE = "default"
#: Safaricom's published sandbox passkey: fine for the sandbox, a mistake in production.
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
#: Words Daraja refuses inside a CallBackURL (reference/daraja.md, "Callback URL rules").
CALLBACK_FORBIDDEN_WORDS = ("mpesa", "m-pesa", "safaricom", "exec", "exe", "cmd", "sql", "query")
#: Callback source addresses published by client libraries; the production default allowlist.
SAFARICOM_CALLBACK_SOURCES = (
    "196.201.214.200", "196.201.214.206", "196.201.214.207", "196.201.214.208",
    "196.201.213.114", "196.201.213.44",
    "196.201.212.127", "196.201.212.128", "196.201.212.129", "196.201.212.132",
    "196.201.212.136", "196.201.212.138", "196.201.212.74", "196.201.212.69",
)
ENV_OVERRIDES = {
    "MPESA_CONSUMER_KEY": ("mpesa", "consumer_key"),
    "MPESA_CONSUMER_SECRET": ("mpesa", "consumer_secret"),
    "MPESA_SHORTCODE": ("mpesa", "shortcode"),
    "MPESA_PASSKEY": ("mpesa", "passkey"),
    "MPESA_CALLBACK_URL": ("mpesa", "callback_url"),
    "MPESA_ENVIRONMENT": ("mpesa", "environment"),
    "MPESA_INITIATOR_NAME": ("mpesa", "initiator_name"),
    "MPESA_INITIATOR_PASSWORD": ("mpesa", "initiator_password"),
    "HOTSPOTD_DATABASE_URL": ("database", "url"),
    "HOTSPOTD_PORTAL_LISTEN": ("portal", "listen"),
    "HOTSPOTD_RADIUS_AUTH_PORT": ("radius", "auth_port"),
    "HOTSPOTD_RADIUS_ACCT_PORT": ("radius", "acct_port"),
    "HOTSPOTD_SMS_API_KEY": ("sms", "api_key"),
}


class ConfigError(ValueError):
    """A configuration problem, worded for the operator: file, table, key, what to do."""

    def __init__(self, source: str, table: str, key: str | None, problem: str):
        where = f"[{_shown(table)}]" + (f" {_shown(key)}" if key else "")
        super().__init__(f"{source}: {where}: {problem}")
        self.source, self.table, self.key, self.problem = source, table, key, problem


def _shown(name: str) -> str:
    """A table or key name as the message shows it: as typed, or quoted when it holds a line break
    or another character that would garble the one-line message."""
    return name if name.isprintable() else repr(name)


@dataclass(frozen=True)
class Option:
    default: Any
    type: type | tuple[type, ...]
    help: str
    choices: tuple[str, ...] = ()


# The schema. Keep it in step with config/hotspotd.toml (a test checks that they agree).
SCHEMA: dict[str, dict[str, Option]] = {
    "portal": {
        "listen": Option("0.0.0.0:8080", str, "host:port of the splash page, API and dashboard"),
        "public_url": Option("http://192.168.88.2:8080", str, "how customers' devices reach the portal "
                             "(the hotspotd box; not 10.5.50.1, the router's own hotspot address)"),
        "threads": Option(8, int, "WSGI worker threads"),
        "trusted_proxies": Option([], list, "addresses whose X-Forwarded-For is believed"),
        "site_name": Option("hotspotd Wi-Fi", str, "venue name shown on the splash page"),
        "pay_limit_per_client": Option("20/minute", str, "pay requests per client address (Flask-Limiter syntax)"),
        "pay_limit_per_phone": Option("5/minute", str, "pay requests per phone number"),
        "pay_limit_per_device": Option("5/minute", str, "pay requests per device (MAC)"),
        "redeem_limit_per_client": Option("10/minute;30/hour", str,
                                          "receipt (\"Already paid?\") and voucher tries per client address"),
        "help_phone": Option("", str, "a number customers can call or text for help, shown on the splash page"),
    },
    "database": {
        "url": Option("sqlite:////var/lib/hotspotd/hotspotd.db", str,
                      "absolute path; or postgresql://user@host/db"),
        "min_free_mb": Option(50, int, "SQLite: refuse new payments when the database's disk has less free space"),
        "busy_timeout_ms": Option(5000, int, "how long a statement waits for a lock (SQLite busy timeout, "
                                  "PostgreSQL lock_timeout)"),
    },
    "mpesa": {
        "environment": Option("simulator", str, "simulator | sandbox | production",
                              ("simulator", "sandbox", "production")),
        "consumer_key": Option("", str, "MPESA_CONSUMER_KEY overrides"),
        "consumer_secret": Option("", str, "MPESA_CONSUMER_SECRET overrides"),
        "shortcode": Option("174379", str, "paybill number, or the store number of a till"),
        "passkey": Option("", str, "Lipa na M-Pesa Online passkey"),
        "callback_url": Option("", str, "public HTTPS URL Daraja posts results to; empty = derived"),
        "transaction_type": Option("CustomerPayBillOnline", str, "or CustomerBuyGoodsOnline",
                                   ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")),
        "till_number": Option("", str, "PartyB for CustomerBuyGoodsOnline"),
        "account_reference": Option("WIFI", str, "shown to the payer (at most 12 characters)"),
        "business_name": Option("", str, "the paybill's or till's name as Safaricom registered it (the prompt "
                                "shows it); shown on the splash page so customers can tell a real prompt"),
        "base_url": Option("", str, "override the Daraja base URL (empty = by environment)"),
        "timeout_seconds": Option(10.0, (int, float), "timeout of every Daraja call"),
        "prompt_lifetime_seconds": Option(180, (int, float), "after this a payment with no answer is timeout"),
        "query_after_seconds": Option(10, (int, float), "first STK query of a payment without callback"),
        "query_interval_seconds": Option(5, (int, float), "starting interval between STK queries"),
        "query_max_interval_seconds": Option(60, (int, float), "longest interval between STK queries"),
        "query_give_up_seconds": Option(86400, int, "stop querying an unresolved payment after this"),
        "initiator_name": Option("", str, "the API initiator (Transaction Status, Reversal): looks M-Pesa codes up "
                                 "that hotspotd never saw (MPESA_INITIATOR_NAME overrides; empty: no lookups)"),
        "initiator_password": Option("", str, "its password (MPESA_INITIATOR_PASSWORD overrides)"),
        "certificate": Option("", str, "Safaricom's public certificate for this environment (PEM or DER, from the "
                              "Daraja portal): it encrypts the initiator password"),
        "pull_every_seconds": Option(0, (int, float), "how often the shortcode's M-Pesa statement is pulled and "
                                     "matched (Pull Transactions; 0: never; register first with hotspotd mpesa "
                                     "register-pull)"),
        "pull_nominated_number": Option("", str, "the M-Pesa number Safaricom's Pull registration names (the "
                                        "owner's; hotspotd mpesa register-pull)"),
        "callback_allowlist": Option([], list,
                                     "source addresses/networks allowed to post callbacks; "
                                     "empty = anyone in simulator/sandbox, Safaricom's in production"),
    },
    "radius": {
        "enabled": Option(True, bool, "answer RADIUS at all"),
        "listen": Option("0.0.0.0", str, "address of the RADIUS server"),
        "auth_port": Option(1812, int, "Access-Request port"),
        "acct_port": Option(1813, int, "Accounting-Request port"),
        "idle_timeout": Option(900, int, "Idle-Timeout sent with each Access-Accept"),
        "interim_interval": Option(300, int, "Acct-Interim-Interval sent with each Access-Accept"),
        "reuse_port": Option(False, bool, "let several hotspotd processes on this server answer on the same "
                             "RADIUS ports (SO_REUSEPORT: the kernel spreads the routers over them)"),
    },
    "simulator": {
        "daraja_listen": Option("127.0.0.1:0", str, "where the built-in Daraja simulator listens"),
        "callback_delay_seconds": Option(2.0, (int, float), "delay of simulated callbacks"),
        "final_after_seconds": Option(2.0, (int, float), "when the simulated query turns final"),
        "timing": Option("instant", str, "instant (the two delays above) | realistic (sandbox timings drawn per "
                         "payment, lost and late callbacks)", ("instant", "realistic")),
        "time_scale": Option(1.0, (int, float), "realistic: every delay divided by this (10: a success in 1.5-3 s)"),
        "seed": Option(0, int, "realistic: the random seed, to replay a run (0: a new one each start, logged)"),
        "lost_callback_rate": Option(0.1, (int, float), "realistic: the fraction of callbacks that never come"),
        "late_callback_rate": Option(0.1, (int, float), "realistic: the fraction of callbacks that come after "
                                     "[mpesa] prompt_lifetime_seconds"),
        "routeros_listen": Option("127.0.0.1:0", str,
                                  "where the simulated venue router (RouterOS API) listens when no [[routers]] are set"),
    },
    "scheduler": {
        "enabled": Option(True, bool, "run the background jobs"),
        "reconcile_every_seconds": Option(5, (int, float), "how often pending payments are queried"),
        "expire_every_seconds": Option(5, (int, float), "how often expired sessions are ended"),
        "readback_every_seconds": Option(300, (int, float), "how often each MikroTik's active sessions are read "
                                         "back and corrected against what was sold (0: never)"),
    },
    "backup": {
        "enabled": Option(True, bool, "take a backup of the SQLite database every every_hours"),
        "folder": Option("", str, "where backups go (empty: a backups folder next to the database)"),
        "keep": Option(14, int, "how many backups to keep"),
        "every_hours": Option(24, (int, float), "hours between backups"),
    },
    "report": {
        "smtp_host": Option("", str, "mail server for hotspotd report --mail (empty: no mail)"),
        "smtp_port": Option(587, int, "its port"),
        "smtp_starttls": Option(True, bool, "use STARTTLS"),
        "smtp_user": Option("", str, "login (empty: none)"),
        "smtp_password": Option("", str, "password"),
        "mail_from": Option("hotspotd@localhost", str, "sender address"),
        "mail_to": Option([], list, "where the report goes when --mail names nobody"),
    },
    "logging": {
        "level": Option("INFO", str, "DEBUG | INFO | WARNING | ERROR",
                        ("DEBUG", "INFO", "WARNING", "ERROR")),
        "format": Option("text", str, "text | json", ("text", "json")),
    },
    "sms": {
        "provider": Option("off", str, "off | africastalking | http (a Kenyan bulk-SMS reseller's HTTP API)",
                           ("off", "africastalking", "http")),
        "username": Option("sandbox", str, "africastalking: the app's username (sandbox: Africa's Talking's sandbox)"),
        "api_key": Option("", str, "the gateway's API key (HOTSPOTD_SMS_API_KEY overrides)"),
        "sender_id": Option("", str, "a registered sender ID or shortcode (empty: the gateway's default)"),
        "base_url": Option("", str, "override the gateway's address (empty: Africa's Talking's, or in the "
                           "simulator environment the built-in simulator's)"),
        "receipts": Option(True, bool, "SMS the receipt, the time bought and the /me link after each payment"),
        "reminder_minutes": Option(10, int, "SMS \"N minutes left\" this long before paid time ends (0: never)"),
        "timeout_seconds": Option(10.0, (int, float), "timeout of one send"),
        "http_url": Option("", str, "http: the reseller's send URL; {phone} {phone_plus} {phone_local} "
                           "{message} {sender_id} {api_key} {username} are filled in"),
        "http_method": Option("POST", str, "http: GET | POST", ("GET", "POST")),
        "http_body": Option("", str, "http: the POST body with the same placeholders (JSON or form, as "
                            "http_content_type says)"),
        "http_content_type": Option("json", str, "http: json | form", ("json", "form")),
        "http_headers": Option([], list, "http: extra headers, \"Name: value\" (placeholders filled in)"),
        "http_success": Option("", str, "http: a regular expression the answer must contain to count as "
                               "sent (empty: any 2xx answer)"),
    },
    "metrics": {
        "enabled": Option(True, bool, "serve /metrics (Prometheus text format) on the portal"),
        "allow": Option(["127.0.0.1/32", "::1/128"], list,
                        "addresses/networks that may read /metrics (customers must not: business figures)"),
    },
}
ARRAY_SCHEMA: dict[str, dict[str, Option]] = {
    "radius.clients": {
        "address": Option(None, str, "NAS address or network (CIDR)"),
        "secret": Option(None, str, "shared secret"),
        "kind": Option("mikrotik", str, "mikrotik | coova", ("mikrotik", "coova")),
        "require_message_authenticator": Option(True, bool, "drop Access-Requests without one"),
        "site": Option(DEFAULT_SITE, str, "the [[sites]] id of the venue behind this NAS"),
        "swapoctets": Option(False, bool, "coova only: chilli runs with swapoctets (its Acct-Input-Octets "
                             "is then the client's upload, as RFC 2866 has it)"),
    },
    "routers": {
        "name": Option(None, str, "a name for the owner"),
        "kind": Option("mikrotik", str, "mikrotik | coova | opennds", ("mikrotik", "coova", "opennds")),
        "address": Option(None, str, "router address"),
        "api_port": Option(8728, int, "RouterOS API port (8729 for TLS)"),
        "user": Option("", str, "API user"),
        "password": Option("", str, "API password"),
        "tls": Option(False, bool, "use api-ssl"),
        "timeout_seconds": Option(5.0, (int, float), "how long one API call may take before the router counts as down"),
        "tls_ca": Option("", str, "CA file that signed the router's api-ssl certificate (empty: system store)"),
        "disconnect": Option("auto", str, "how expired devices are cut off: api | coa | auto (mikrotik: api, coova: coa)",
                             ("auto", "api", "coa")),
        "coa_port": Option(3799, int, "RFC 5176 port on the NAS"),
        "secret": Option("", str, "RADIUS secret for Disconnect-Request (empty = client's)"),
        "uamsecret": Option("", str, "CoovaChilli uamsecret"),
        "site": Option(DEFAULT_SITE, str, "the [[sites]] id of the venue this router serves"),
        "source_address": Option("", str, "this server's address Disconnect/CoA-Requests to the router are sent from "
                                 "(empty: [radius] listen when it is one address, else the system's choice); "
                                 "CoovaChilli drops requests from any address but its RADIUS server's"),
        "faskey": Option("", str, "openNDS: the shared faskey (16-32 letters and digits)"),
        "fas_secure_enabled": Option(3, int, "openNDS: 3 (HTTPS FAS, authmon; production) or 1 (base64, no PHP)",
                                     (1, 3)),
        "fas_address": Option("", str, "openNDS: hotspotd's IP as the gateway reaches it (empty: the portal URL's host)"),
        "gateway_interface": Option("br-lan", str, "openNDS: the interface its clients are on"),
        "poll_seconds": Option(5, int, "openNDS: how often authmon and the deauth agent ask hotspotd (1-59)"),
    },
    "sites": {
        "id": Option(None, str, "short name (a-z, 0-9, -) used in the router's login page and the database"),
        "name": Option(None, str, "venue name shown on its splash page"),
        "color": Option("", str, "splash page accent colour, #RRGGBB (empty: the default)"),
        "shortcode": Option("", str, "the venue's own paybill or store number (empty: the [mpesa] account)"),
        "consumer_key": Option("", str, "its Daraja app's consumer key"),
        "consumer_secret": Option("", str, "its Daraja app's consumer secret"),
        "passkey": Option("", str, "its Lipa na M-Pesa Online passkey"),
        "transaction_type": Option("CustomerPayBillOnline", str, "or CustomerBuyGoodsOnline (+ till_number)",
                                   ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")),
        "till_number": Option("", str, "PartyB for CustomerBuyGoodsOnline"),
        "account_reference": Option("", str, "shown to the payer (empty: [mpesa] account_reference)"),
        "business_name": Option("", str, "its paybill's or till's registered name (empty: [mpesa] business_name)"),
        "help_phone": Option("", str, "the venue's help number (empty: [portal] help_phone)"),
    },
}
DEFAULT_RADIUS_CLIENTS = [{"address": "127.0.0.1", "secret": "testing123", "kind": "mikrotik"}]
SITE_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class Section:
    """A table of the config: attribute access to its keys."""
    name: str
    values: dict[str, Any]

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(f"[{self.name}] has no key {key!r}") from None


@dataclass(frozen=True)
class RadiusClient:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    secret: str
    kind: str
    require_message_authenticator: bool
    site: str = "default"
    swapoctets: bool = False

    @property
    def input_is_download(self) -> bool:
        """Whether this NAS's Acct-Input-Octets is what the client downloaded: CoovaChilli counts
        from the client's side (the reverse of RFC 2866) unless it runs with ``swapoctets``."""
        return self.kind == "coova" and not self.swapoctets


@dataclass(frozen=True)
class Router:
    name: str
    kind: str
    address: str
    api_port: int
    user: str
    password: str
    tls: bool
    timeout_seconds: float
    tls_ca: str
    disconnect: str
    coa_port: int
    secret: str
    uamsecret: str
    site: str = "default"
    source_address: str = ""
    faskey: str = ""
    fas_secure_enabled: int = 3
    fas_address: str = ""
    gateway_interface: str = "br-lan"
    poll_seconds: int = 5

    @property
    def disconnect_method(self) -> str:
        """``api`` (RouterOS API), ``coa`` (RFC 5176 Disconnect-Request) or ``agent`` (openNDS:
        hotspotd's deauth agent on the gateway)."""
        if self.kind == "opennds":
            return "agent"
        if self.disconnect != "auto":
            return self.disconnect
        return "api" if self.kind == "mikrotik" else "coa"


@dataclass(frozen=True)
class MpesaAccount:
    """Whose paybill or till a payment goes to: ``[mpesa]``'s, or a site's own."""
    shortcode: str
    consumer_key: str
    consumer_secret: str
    passkey: str
    transaction_type: str
    till_number: str
    account_reference: str
    business_name: str = ""


@dataclass(frozen=True)
class Payee:
    """What the M-Pesa prompt will show the customer, said on the splash page before and while it
    comes, so a real prompt can be told from a scam: the registered name, paybill or till, the
    account (a paybill's only; a till has none) and where to ask for help."""
    business_name: str
    kind: str               # "paybill" | "till"
    number: str
    account_reference: str  # "" for a till
    help_phone: str


@dataclass(frozen=True)
class Site:
    """A venue: its routers and RADIUS clients name it, its packages and payments carry its id.
    ``account`` is its own Daraja account, or None for the ``[mpesa]`` one."""
    id: str
    name: str
    color: str = ""
    account: MpesaAccount | None = None
    help_phone: str = ""


@dataclass(frozen=True)
class Config:
    source: str
    portal: Section
    database: Section
    mpesa: Section
    radius: Section
    simulator: Section
    scheduler: Section
    backup: Section
    report: Section
    logging: Section
    metrics: Section
    sms: Section
    radius_clients: tuple[RadiusClient, ...] = ()
    routers: tuple[Router, ...] = ()
    #: every venue by id; always holds :data:`DEFAULT_SITE` (named by [portal] site_name)
    sites: dict[str, Site] = field(default_factory=dict, compare=False)
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    def replace(self, **tables: dict[str, Any]) -> "Config":
        """A copy with some keys changed, validated again (tests and the demo use it)."""
        data = {t: dict(self.raw.get(t, {})) for t in self.raw}
        for table, values in tables.items():
            if table in ("radius.clients", "routers", "sites"):
                data.setdefault("radius", {})
                if table in ("routers", "sites"):
                    data[table] = values
                else:
                    data["radius"]["clients"] = values
            else:
                data.setdefault(table, {}).update(values)
        return from_dict(data, self.source, env={})

    @property
    def backup_folder(self) -> str | None:
        """Where backups go; None when the database is not SQLite (PostgreSQL: pg_dump)."""
        path = paths.sqlite_file(self.database.url)
        if path is None:
            return None
        return self.backup.folder or os.path.join(os.path.dirname(path), "backups")

    def radius_client_secret(self, address: str) -> str | None:
        """The shared secret of the ``[[radius.clients]]`` entry covering ``address``."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        return next((c.secret for c in self.radius_clients if ip in c.network), None)

    @property
    def simulated(self) -> bool:
        return self.mpesa.environment == "simulator"

    @property
    def multi_site(self) -> bool:
        """Whether ``[[sites]]`` declare venues besides the default one."""
        return any(s != DEFAULT_SITE for s in self.sites)

    def site(self, site_id: str | None) -> Site | None:
        """The venue ``site_id`` (None or empty: the default one); None when no such venue exists."""
        return self.sites.get(site_id or DEFAULT_SITE)

    @property
    def default_account(self) -> MpesaAccount:
        m = self.mpesa
        return MpesaAccount(m.shortcode, m.consumer_key, m.consumer_secret, m.passkey, m.transaction_type,
                            m.till_number, m.account_reference, m.business_name)

    def payee(self, site_id: str | None) -> Payee:
        """Whom a payment at venue ``site_id`` goes to, as the customer's prompt names it."""
        site = self.site(site_id) or self.site(None)
        account = site.account or self.default_account
        till = account.transaction_type == "CustomerBuyGoodsOnline"
        return Payee(account.business_name or self.mpesa.business_name, "till" if till else "paybill",
                     account.till_number if till else account.shortcode, "" if till else account.account_reference,
                     site.help_phone or self.portal.help_phone)


def callback_url(cfg: Config, token: str, portal_url: str) -> str:
    """Where Daraja posts results: ``[mpesa] callback_url`` with the install's secret token as its
    last path part (``…/cb/<token>``), or on the simulator the portal's own address."""
    configured = cfg.mpesa.callback_url
    if configured and not cfg.simulated:
        parts = urlsplit(configured)
        if "/cb/" in parts.path:
            return configured
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + f"/cb/{token}"))
    return f"{portal_url}/cb/{token}"


def load(path: str | os.PathLike | None, env: dict[str, str] | None = None) -> Config:
    """Read ``path`` (None: embedded defaults only), apply env overrides, validate."""
    env = os.environ if env is None else env
    source = str(path) if path else "<defaults>"
    data: dict = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(source, "-", None, "file not found; pass --config PATH or set HOTSPOTD_CONFIG") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "-", None, f"not valid TOML ({exc})") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(source, "-", None, f"not valid TOML: save the file as UTF-8 (byte {exc.start} is not)") from None
        except OSError as exc:
            raise ConfigError(source, "-", None, f"cannot read the file ({exc.strerror or exc})") from None
    return from_dict(data, source, env)


SECRET_KEYS = (("mpesa", "consumer_secret"), ("mpesa", "passkey"), ("mpesa", "consumer_key"),
               ("mpesa", "initiator_password"))


def permission_problems(path: str | os.PathLike, cfg: Config | None = None) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` about who can read or change the config file.

    Anyone able to write it can point callbacks or RADIUS anywhere: an error. Anyone able to
    read it can read the Daraja and RADIUS secrets: a warning (the installer makes it 0600)."""
    errors: list[str] = []
    warnings: list[str] = []
    try:
        st = os.stat(path)
    except OSError:
        return errors, warnings
    mode = st.st_mode & 0o777
    if mode & 0o002:
        errors.append(f"{path} can be changed by any user (mode {mode:04o}); run: chmod 600 {path}")
    elif mode & 0o020:
        warnings.append(f"{path} can be changed by its group (mode {mode:04o}); run: chmod 600 {path}")
    has_secrets = cfg is None or any(cfg.mpesa.values.get(k) for t, k in SECRET_KEYS) or bool(
        cfg.sms.api_key) or any(
        c.secret for c in cfg.radius_clients) or any(r.password or r.secret for r in cfg.routers) or any(
        s.account.consumer_secret or s.account.passkey for s in cfg.sites.values() if s.account)
    if has_secrets and mode & 0o044:
        warnings.append(f"{path} holds secrets but other users can read it (mode {mode:04o}); run: chmod 600 {path}")
    return errors, warnings


def from_dict(data: dict, source: str = "<dict>", env: dict[str, str] | None = None) -> Config:
    env = {} if env is None else env
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for var, (table, key) in ENV_OVERRIDES.items():
        if env.get(var):
            value: str | int = env[var]
            if SCHEMA[table][key].type is int:
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigError(source, table, key,
                                      f"{var}={env[var]!r} (from the environment) is not a whole number") from None
            data.setdefault(table, {})[key] = value
    for table in data:
        if table not in SCHEMA and table not in ("routers", "sites"):
            raise ConfigError(source, table, None,
                              f"unknown table; known: {', '.join(sorted(SCHEMA) + ['routers', 'sites'])}")
    sections = {}
    for table, options in SCHEMA.items():
        given = data.get(table, {})
        if not isinstance(given, dict):
            raise ConfigError(source, table, None, "must be a table")
        extra = {"clients"} if table == "radius" else set()
        sections[table] = Section(table, _check_table(source, table, options, given, extra))
    clients_raw = data.get("radius", {}).get("clients", DEFAULT_RADIUS_CLIENTS)
    clients = tuple(_radius_client(source, c) for c in _array(source, "radius.clients", clients_raw))
    routers = tuple(Router(**_check_table(source, "routers", ARRAY_SCHEMA["routers"], r, set()))
                    for r in _array(source, "routers", data.get("routers", [])))
    sites = _sites(source, sections["portal"], sections["mpesa"], _array(source, "sites", data.get("sites", [])))
    cfg = Config(source=source, radius_clients=clients, routers=routers, sites=sites, raw=data, **sections)
    _check_semantics(cfg)
    return cfg


def _sites(source: str, portal: Section, mpesa: Section, raw: list[dict]) -> dict[str, Site]:
    """The ``[[sites]]`` by id, with the default venue first (declared or not)."""
    sites = {DEFAULT_SITE: Site(DEFAULT_SITE, portal.site_name)}
    declared: set[str] = set()
    for entry in raw:
        v = _check_table(source, "sites", ARRAY_SCHEMA["sites"], entry, set())
        sid = v["id"]
        if not SITE_ID_RE.fullmatch(sid):
            raise ConfigError(source, "sites", "id", f"{sid!r}: use 1-32 of a-z, 0-9 and -, starting with a letter or digit")
        if sid in declared:
            raise ConfigError(source, "sites", "id", f"{sid!r} is used by two [[sites]] entries")
        declared.add(sid)
        if v["color"] and not re.fullmatch(r"#[0-9a-fA-F]{6}", v["color"]):
            raise ConfigError(source, "sites", "color", f"site {sid!r}: {v['color']!r} is not a #RRGGBB colour")
        own = ("consumer_key", "consumer_secret", "passkey", "till_number", "account_reference", "business_name")
        account = None
        if v["shortcode"]:
            account = _site_account(source, sid, v, mpesa)
        elif any(v[k] for k in own):
            key = next(k for k in own if v[k])
            raise ConfigError(source, "sites", key, f"site {sid!r}: set shortcode too (its own paybill or store "
                              "number), or remove the site's M-Pesa keys to use the [mpesa] account")
        sites[sid] = Site(sid, v["name"], v["color"], account, v["help_phone"])
    return sites


def _site_account(source: str, sid: str, v: dict, mpesa: Section) -> MpesaAccount:
    """A site's own Daraja account, checked as ``[mpesa]`` is."""
    if not re.fullmatch(r"\d{5,7}", v["shortcode"]):
        raise ConfigError(source, "sites", "shortcode", f"site {sid!r}: {v['shortcode']!r} is not a paybill/store number")
    if v["transaction_type"] == "CustomerBuyGoodsOnline" and not re.fullmatch(r"\d{5,7}", v["till_number"]):
        raise ConfigError(source, "sites", "till_number", f"site {sid!r}: CustomerBuyGoodsOnline needs the till number")
    reference = v["account_reference"] or mpesa.account_reference
    if not 1 <= len(reference) <= 12:
        raise ConfigError(source, "sites", "account_reference", f"site {sid!r}: must be 1 to 12 characters")
    env = mpesa.environment
    if env != "simulator":
        for key in ("consumer_key", "consumer_secret", "passkey"):
            if not v[key]:
                raise ConfigError(source, "sites", key, f"site {sid!r}: its own shortcode needs its own {key} "
                                  f"for environment {env!r} (from the Daraja portal's app page)")
    if env == "production" and v["passkey"] == SANDBOX_PASSKEY:
        raise ConfigError(source, "sites", "passkey", f"site {sid!r}: this is the public sandbox passkey")
    return MpesaAccount(v["shortcode"], v["consumer_key"], v["consumer_secret"], v["passkey"], v["transaction_type"],
                        v["till_number"], reference, v["business_name"])


def _array(source: str, name: str, value: Any) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(source, name, None, f"must be an array of tables ([[{name}]])")
    return value


def _check_table(source: str, table: str, options: dict[str, Option], given: dict, extra: set) -> dict:
    unknown = set(given) - set(options) - extra
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(source, table, key, f"unknown key; known keys: {', '.join(options)}")
    values = {}
    for key, opt in options.items():
        if key not in given:
            if opt.default is None:
                raise ConfigError(source, table, key, f"missing; {opt.help}")
            values[key] = list(opt.default) if isinstance(opt.default, list) else opt.default
            continue
        value = given[key]
        if isinstance(value, bool) and opt.type is not bool or not isinstance(value, opt.type):
            want = opt.type.__name__ if isinstance(opt.type, type) else "number"
            raise ConfigError(source, table, key,
                              f"expected {_type_word(want)}, got {value!r}; {opt.help}")
        if opt.choices and value not in opt.choices:
            raise ConfigError(source, table, key, f"{value!r} is not one of {', '.join(map(str, opt.choices))}")
        values[key] = value
    return values


def _type_word(name: str) -> str:
    return {"str": "a string", "int": "a whole number", "bool": "true or false",
            "list": "a list", "number": "a number"}.get(name, name)


def _radius_client(source: str, raw: dict) -> RadiusClient:
    values = _check_table(source, "radius.clients", ARRAY_SCHEMA["radius.clients"], raw, set())
    try:
        network = ipaddress.ip_network(values["address"], strict=False)
    except ValueError:
        raise ConfigError(source, "radius.clients", "address",
                          f"{values['address']!r} is not an IP address or network") from None
    if not values["secret"]:
        raise ConfigError(source, "radius.clients", "secret", "must not be empty")
    return RadiusClient(network, values["secret"], values["kind"], values["require_message_authenticator"],
                        values["site"], values["swapoctets"])


def coa_source(cfg: "Config", router: Router) -> str | None:
    """The address Disconnect/CoA-Requests to ``router`` go out from: its ``source_address``, else
    ``[radius] listen`` when that is one address (a NAS such as CoovaChilli takes them only from
    its RADIUS server's address), else None (the system picks by route)."""
    if router.source_address:
        return router.source_address
    listen = cfg.radius.listen
    try:
        return None if ipaddress.ip_address(listen).is_unspecified else listen
    except ValueError:
        return None


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); raise ValueError when it is not one."""
    match = re.fullmatch(r"\[?([^\]]*?)\]?:(\d{1,5})", value.strip())
    if not match or int(match.group(2)) > 65535:
        raise ValueError(value)
    return match.group(1) or "0.0.0.0", int(match.group(2))


def _check_sms(src: str, cfg: Config) -> None:
    sms = cfg.sms
    if sms.reminder_minutes < 0:
        raise ConfigError(src, "sms", "reminder_minutes", "must be 0 (no reminder) or a number of minutes")
    if sms.timeout_seconds <= 0:
        raise ConfigError(src, "sms", "timeout_seconds", "must be greater than 0")
    if sms.base_url and urlsplit(sms.base_url).scheme not in ("http", "https"):
        raise ConfigError(src, "sms", "base_url", "expected an http(s) URL, or empty")
    if sms.provider == "africastalking":
        if not sms.username:
            raise ConfigError(src, "sms", "username", "Africa's Talking needs the app's username (sandbox for its "
                              "sandbox)")
        if not sms.api_key and not (cfg.simulated and not sms.base_url):
            raise ConfigError(src, "sms", "api_key", "required: the API key of the Africa's Talking app "
                              "(its dashboard, Settings > API Key), or set HOTSPOTD_SMS_API_KEY")
    if sms.provider == "http":
        if urlsplit(sms.http_url).scheme not in ("http", "https") or not urlsplit(sms.http_url).hostname:
            raise ConfigError(src, "sms", "http_url", "the reseller's send URL, e.g. "
                              "https://quicksms.advantasms.com/api/services/sendsms/")
        if sms.http_method == "GET" and sms.http_body:
            raise ConfigError(src, "sms", "http_body", "a GET sends no body: put the placeholders in http_url")
        for header in sms.http_headers:
            if not isinstance(header, str) or ":" not in header:
                raise ConfigError(src, "sms", "http_headers", f"{header!r}: write \"Name: value\"")
        if sms.http_success:
            try:
                re.compile(sms.http_success)
            except re.error as exc:
                raise ConfigError(src, "sms", "http_success", f"not a regular expression ({exc})") from None


def _check_semantics(cfg: Config) -> None:
    src = cfg.source
    for table, key in (("portal", "listen"), ("simulator", "daraja_listen"), ("simulator", "routeros_listen")):
        try:
            parse_listen(getattr(cfg, table).values[key])
        except ValueError:
            raise ConfigError(src, table, key, "expected host:port, e.g. \"0.0.0.0:8080\"") from None
    public = urlsplit(cfg.portal.public_url)
    if public.scheme not in ("http", "https") or not public.hostname:
        raise ConfigError(src, "portal", "public_url", "expected an http(s) URL such as http://192.168.88.2:8080")
    url = cfg.database.url
    if not (url.startswith("sqlite:///") or url.startswith(("postgresql://", "postgres://"))):
        raise ConfigError(src, "database", "url",
                          "expected sqlite:////absolute/path.db or postgresql://user@host/db")
    if paths.sqlite_path(url) not in (None, ":memory:") and paths.sqlite_file(url) is None:
        raise ConfigError(src, "database", "url", "the SQLite path must be absolute: sqlite:////var/lib/hotspotd/hotspotd.db")
    m = cfg.mpesa
    env = m.environment
    if not re.fullmatch(r"\d{5,7}", m.shortcode):
        raise ConfigError(src, "mpesa", "shortcode", f"{m.shortcode!r} is not a paybill/store number (5-7 digits)")
    if m.transaction_type == "CustomerBuyGoodsOnline" and not re.fullmatch(r"\d{5,7}", m.till_number):
        raise ConfigError(src, "mpesa", "till_number", "CustomerBuyGoodsOnline needs the till number here")
    if not 1 <= len(m.account_reference) <= 12:
        raise ConfigError(src, "mpesa", "account_reference", "must be 1 to 12 characters")
    if m.callback_url:
        problem = callback_url_problem(m.callback_url, env)
        if problem:
            raise ConfigError(src, "mpesa", "callback_url", problem)
    elif env == "production":
        raise ConfigError(src, "mpesa", "callback_url",
                          "required in production: the public HTTPS URL of this box, e.g. https://wifi.example.co.ke")
    if env != "simulator":
        for key in ("consumer_key", "consumer_secret", "passkey"):
            if not m.values[key]:
                raise ConfigError(src, "mpesa", key, f"required for environment {env!r} (from the Daraja portal's app page)")
    if env == "production" and m.passkey == SANDBOX_PASSKEY:
        raise ConfigError(src, "mpesa", "passkey", "this is the public sandbox passkey; use the production passkey Safaricom sent you")
    for entry in m.callback_allowlist:
        try:
            ipaddress.ip_network(str(entry), strict=False)
        except ValueError:
            raise ConfigError(src, "mpesa", "callback_allowlist", f"{entry!r} is not an address or network") from None
    for key in ("pay_limit_per_client", "pay_limit_per_phone", "pay_limit_per_device", "redeem_limit_per_client"):
        # a typo here would silently switch the limit off: Flask-Limiter skips what it cannot parse
        try:
            if not parse_many(cfg.portal.values[key]):
                raise ValueError
        except ValueError:
            raise ConfigError(src, "portal", key, f"{cfg.portal.values[key]!r} is not a rate limit; "
                              "write e.g. \"20/minute\" or \"10/minute;30/hour\"") from None
    for key in ("auth_port", "acct_port"):
        if not 0 <= cfg.radius.values[key] <= 65535:
            raise ConfigError(src, "radius", key, "must be a port number 0-65535")
    for key in ("idle_timeout", "interim_interval"):   # sent as 32-bit RADIUS integers
        if not 0 <= cfg.radius.values[key] <= 0xFFFFFFFF:
            raise ConfigError(src, "radius", key, "must be a number of seconds from 0 to 4294967295")
    for key in ("prompt_lifetime_seconds", "query_interval_seconds", "query_max_interval_seconds"):
        if m.values[key] <= 0:
            raise ConfigError(src, "mpesa", key, "must be greater than 0")
    if m.initiator_name and env != "simulator":
        if not m.initiator_password:
            raise ConfigError(src, "mpesa", "initiator_password", "required with initiator_name (or set "
                              "MPESA_INITIATOR_PASSWORD)")
        if not m.certificate:
            raise ConfigError(src, "mpesa", "certificate", f"required with initiator_name: the {env} certificate "
                              "file from the Daraja portal")
        from .daraja.credentials import CertificateError, load_certificate
        try:
            with open(m.certificate, "rb") as fh:
                load_certificate(fh.read())
        except OSError as exc:
            raise ConfigError(src, "mpesa", "certificate", f"cannot read {m.certificate} ({exc.strerror or exc})") from None
        except CertificateError as exc:
            raise ConfigError(src, "mpesa", "certificate", f"{m.certificate}: {exc}") from None
    if m.pull_every_seconds < 0:
        raise ConfigError(src, "mpesa", "pull_every_seconds", "must be 0 (never) or a number of seconds")
    if cfg.simulator.time_scale <= 0:
        raise ConfigError(src, "simulator", "time_scale", "must be greater than 0")
    for key in ("lost_callback_rate", "late_callback_rate"):
        if not 0 <= cfg.simulator.values[key] <= 1:
            raise ConfigError(src, "simulator", key, "is a fraction from 0 to 1 (0.1: one in ten)")
    if cfg.backup.keep < 1:
        raise ConfigError(src, "backup", "keep", "keep at least 1 backup")
    if cfg.backup.every_hours <= 0:
        raise ConfigError(src, "backup", "every_hours", "must be greater than 0")
    _check_sms(src, cfg)
    for entry in cfg.metrics.allow:
        try:
            ipaddress.ip_network(str(entry), strict=False)
        except ValueError:
            raise ConfigError(src, "metrics", "allow", f"{entry!r} is not an address or network") from None
    for table, entries in (("radius.clients", cfg.radius_clients), ("routers", cfg.routers)):
        for entry in entries:
            if entry.site not in cfg.sites:
                raise ConfigError(src, table, "site", f"{entry.site!r} is not a [[sites]] id; known: "
                                  + ", ".join(cfg.sites))
    names = set()
    for r in cfg.routers:
        if r.name in names:
            raise ConfigError(src, "routers", "name", f"{r.name!r} is used by two [[routers]] entries")
        names.add(r.name)
        if r.source_address:
            try:
                ipaddress.ip_address(r.source_address)
            except ValueError:
                raise ConfigError(src, "routers", "source_address", f"router {r.name!r}: {r.source_address!r} is not "
                                  "an IP address of this server") from None
        if r.kind == "opennds":
            _check_opennds(src, r)
            continue
        if r.kind == "coova" and r.disconnect == "api":
            raise ConfigError(src, "routers", "disconnect", f"router {r.name!r}: CoovaChilli has no RouterOS API; use \"coa\"")
        if r.tls_ca and not os.path.isfile(r.tls_ca):
            raise ConfigError(src, "routers", "tls_ca", f"router {r.name!r}: no such file {r.tls_ca!r}")
        if r.disconnect_method == "coa" and not (r.secret or cfg.radius_client_secret(r.address)):
            raise ConfigError(src, "routers", "secret", f"router {r.name!r}: Disconnect-Request needs a secret "
                              "(here or in a [[radius.clients]] entry covering its address)")


OPENNDS_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
FASKEY_RE = re.compile(r"[A-Za-z0-9]{16,32}")
INTERFACE_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def _check_opennds(src: str, r: Router) -> None:
    if not OPENNDS_NAME_RE.fullmatch(r.name):
        raise ConfigError(src, "routers", "name", f"router {r.name!r}: openNDS's gatewayname is the router's name; "
                          "use letters, digits and - _ . only (it names the gateway in authmon's requests)")
    if not FASKEY_RE.fullmatch(r.faskey):
        raise ConfigError(src, "routers", "faskey", f"router {r.name!r}: openNDS needs a faskey of 16-32 letters and "
                          "digits (the AES key and the rhid secret); e.g. the output of `openssl rand -hex 16`")
    if r.fas_address and not _is_ip(r.fas_address):
        raise ConfigError(src, "routers", "fas_address", f"router {r.name!r}: {r.fas_address!r} is not an IP address")
    if not INTERFACE_RE.fullmatch(r.gateway_interface):
        raise ConfigError(src, "routers", "gateway_interface", f"router {r.name!r}: not an interface name")
    if not 1 <= r.poll_seconds <= 59:
        raise ConfigError(src, "routers", "poll_seconds", f"router {r.name!r}: must be 1-59 seconds")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def callback_url_problem(url: str, environment: str) -> str | None:
    """Why Daraja would refuse ``url`` as a CallBackURL, or None when it would take it."""
    if any(ch.isspace() for ch in url):
        return "must not contain spaces"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected a full URL such as https://wifi.example.co.ke/cb/<token>"
    if environment == "production" and parts.scheme != "https":
        return "Daraja requires HTTPS in production; put the portal behind TLS and use https://"
    lowered = url.lower()
    for word in CALLBACK_FORBIDDEN_WORDS:
        if word in lowered:
            return f"contains {word!r}, which Daraja refuses in callback URLs; use a neutral path such as /cb/<token>"
    return None


def metrics_allowlist(cfg: Config) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Networks that may read ``/metrics``; empty tuple means nobody."""
    return tuple(ipaddress.ip_network(str(e), strict=False) for e in cfg.metrics.allow)


def callback_allowlist(cfg: Config) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Networks allowed to post callbacks; empty tuple means anyone."""
    entries = cfg.mpesa.callback_allowlist
    if not entries and cfg.mpesa.environment == "production":
        entries = SAFARICOM_CALLBACK_SOURCES
    return tuple(ipaddress.ip_network(str(e), strict=False) for e in entries)
