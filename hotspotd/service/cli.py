"""The ``hotspotd`` command. ``main(args)`` returns the exit code, so tests call it directly."""
from __future__ import annotations

import argparse
import logging
import os
import smtplib
import sys
import time

from .. import clock, config as config_mod, logs
from ..storage import db as db_mod, paths
from ..config import ConfigError
from ..errors import PortInUse
from ..storage.postgres import DriverMissing
from ..identifiers import mask_phone
from . import mpesa_cli, ports, simulate, sms_cli

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hotspotd", description="Pay-to-connect Wi-Fi controller (M-Pesa, RADIUS).")
    p.add_argument("--config", help="config file (default: $HOTSPOTD_CONFIG, else built-in defaults)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the portal, RADIUS and the scheduler")
    sub.add_parser("check", help="check the installation: config, database, Daraja, callback URL, routers, ports")
    dbp = sub.add_parser("db", help="database maintenance").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("migrate", help="bring the schema up to date")
    bk = dbp.add_parser("backup", help="take a backup now (SQLite's online backup; the daemon may run)")
    bk.add_argument("--to", metavar="FOLDER", help="default: [backup] folder")
    dbp.add_parser("backups", help="list the backups")
    rs = dbp.add_parser("restore", help="replace the database with a backup (stop the daemon first)")
    rs.add_argument("file", help="a backup file, e.g. /var/lib/hotspotd/backups/hotspotd-20261129-020000.db")
    rs.add_argument("--yes", action="store_true", help="do not ask")
    cp = dbp.add_parser("copy", help="copy a whole database into a new, empty one (a venue's SQLite onto PostgreSQL)")
    cp.add_argument("--from", dest="source", required=True, metavar="URL", help="e.g. sqlite:////var/lib/hotspotd/hotspotd.db")
    cp.add_argument("--to", dest="target", required=True, metavar="URL", help="e.g. postgresql://hotspotd@central/hotspotd")

    pk = sub.add_parser("packages", help="what customers can buy").add_subparsers(dest="pk_command", required=True)
    pk.add_parser("list")
    add = pk.add_parser("add")
    add.add_argument("--name", required=True)
    add.add_argument("--name-sw", help="the name in Kiswahili (default: --name in both languages)")
    add.add_argument("--price", type=int, required=True, help="whole KES")
    add.add_argument("--minutes", type=int, required=True)
    add.add_argument("--data-mb", type=int, help="data cap in MB")
    add.add_argument("--rate", help="rate limit rx/tx, e.g. 2M/5M")
    add.add_argument("--devices", type=int, default=1)
    add.add_argument("--site", metavar="ID", help="sold only at this venue ([[sites]] id; default: every venue)")
    add.add_argument("--roams", action="store_true", help="time bought works at every venue, not only where bought")
    for name in ("disable", "enable"):
        c = pk.add_parser(name)
        c.add_argument("id", type=int)
    edit = pk.add_parser("edit")
    edit.add_argument("id", type=int)
    edit.add_argument("--name")
    edit.add_argument("--name-sw", help="the name in Kiswahili (\"\": the name in both languages)")
    edit.add_argument("--price", type=int)
    edit.add_argument("--minutes", type=int)
    edit.add_argument("--data-mb", type=int, help="data cap in MB")
    edit.add_argument("--rate", help="rate limit rx/tx, e.g. 2M/5M")
    edit.add_argument("--devices", type=int)
    edit.add_argument("--position", type=int)
    edit.add_argument("--site", metavar="ID", help="sold only at this venue; \"all\": at every venue")
    edit.add_argument("--roams", choices=("yes", "no"), help="whether time bought works at every venue")

    pay = sub.add_parser("payments", help="payments").add_subparsers(dest="pay_command", required=True)
    pl = pay.add_parser("list")
    pl.add_argument("--limit", type=int, default=20)
    pl.add_argument("--status")
    ses = sub.add_parser("sessions", help="sessions (entitlements)").add_subparsers(dest="ses_command", required=True)
    sl = ses.add_parser("list")
    sl.add_argument("--all", action="store_true", help="also ended ones")

    adm = sub.add_parser("admin", help="dashboard accounts (/admin)").add_subparsers(dest="admin_command", required=True)
    for name, text in (("create", "make an account"), ("set-password", "set a new password (also unlocks)")):
        c = adm.add_parser(name, help=text)
        c.add_argument("username")
        c.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input (for scripts)")
        if name == "create":
            c.add_argument("--sites", metavar="ID,ID",
                           help="limit the account to these venues ([[sites]] ids; default: every venue)")
    ss = adm.add_parser("set-sites", help="limit an account to some venues, or let it see all")
    ss.add_argument("username")
    ss.add_argument("sites", metavar="ID,ID|all", help="comma-separated [[sites]] ids, or all")
    adm.add_parser("list", help="the accounts")

    rc = sub.add_parser("router-config", help="print router settings for hotspotd (RouterOS script, chilli config, openNDS config)")
    rc.add_argument("kind", choices=("mikrotik", "coova", "opennds"))
    rc.add_argument("--router", metavar="NAME", help="a [[routers]] entry (its secret, coa_port, uamsecret)")
    rc.add_argument("--portal-url", metavar="URL", help="splash page as devices reach it (default: [portal] public_url)")
    rc.add_argument("--radius-address", metavar="IP", help="the hotspotd box's address as the router sees it")
    rc.add_argument("--login-html", metavar="FILE", help="mikrotik: also write the hotspot login.html here")
    rc.add_argument("--hotspotd-mac", metavar="MAC",
                    help="mikrotik: the hotspotd box's MAC, when it sits behind the hotspot interface (bypassed)")
    rc.add_argument("--format", choices=("uci", "debian", "agent"), default="uci",
                    help="opennds: OpenWrt's /etc/config/opennds (uci), Debian's /etc/opennds/opennds.conf, "
                         "or the deauth agent")

    rp = sub.add_parser("report", help="a day's revenue, payments and sessions (text, CSV or e-mail)")
    rp.add_argument("--date", default="today", help="YYYY-MM-DD, today or yesterday (Nairobi days)")
    rp.add_argument("--csv", metavar="FILE", help="also write the day's payments as CSV (- for stdout)")
    rp.add_argument("--mail", nargs="*", metavar="ADDRESS", help="mail it (default: [report] mail_to)")
    rp.add_argument("--site", metavar="ID", help="one venue's day ([[sites]] id; default: every venue)")

    simulate.add_parser(sub)
    sms_cli.add_parser(sub)
    mpesa_cli.add_parser(sub)
    return p


def _setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    logs.configure(level, fmt)   # also keeps apscheduler's and the DEBUG-leaking libraries' lines down


def main(argv: list[str] | None = None) -> int:
    """The ``hotspotd`` command. Start-up failures an operator meets (a port in use, a PostgreSQL
    URL without its driver) end in one line saying what to do, not a traceback; output cut short
    by a closed pipe (``hotspotd payments list | head``) ends quietly."""
    try:
        return _main(argv)
    except PortInUse as exc:
        print(f"hotspotd: {ports.explain(exc)}", file=sys.stderr)
        return 2
    except DriverMissing as exc:
        print(f"hotspotd: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (head, a pager quit): nothing more to say; silence the final flush too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        _setup_logging()
        return simulate.run(args)
    path = args.config or os.environ.get("HOTSPOTD_CONFIG")
    try:
        cfg = config_mod.load(path)
    except ConfigError as exc:
        print(f"hotspotd: configuration error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(cfg.logging.level, cfg.logging.format)
    if args.command == "run" and path:
        errors, warnings = config_mod.permission_problems(path, cfg)
        for problem in warnings:
            log.warning("config: %s", problem)
        if errors:
            for problem in errors:
                print(f"hotspotd: configuration error: {problem}", file=sys.stderr)
            return 2
    if args.command == "run":
        from .daemon import run
        return run(cfg)
    if args.command == "check":
        return _check(cfg, path)
    if args.command == "router-config":
        return _router_config(cfg, args)
    if args.command == "db" and args.db_command in ("backup", "backups", "restore"):
        return _backups(cfg, args)
    if args.command == "db" and args.db_command == "copy":
        return _copy(args)
    try:
        db_mod.prepare(cfg.database.url, cfg.database.busy_timeout_ms)
    except Exception as exc:  # noqa: BLE001 - one clear line for the operator
        print(f"hotspotd: cannot open the database {paths.shown_url(cfg.database.url)}: {exc}", file=sys.stderr)
        return 1
    if args.command == "report":
        return _report(cfg, args)
    if args.command == "packages":
        return _packages(args, cfg)
    if args.command == "admin":
        return _admin(args, cfg)
    if args.command == "sms":
        return sms_cli.run(args, cfg)
    if args.command == "mpesa":
        return mpesa_cli.run(args, cfg)
    handler = {"db": _db, "payments": _payments, "sessions": _sessions}[args.command]
    return handler(args)


def _check(cfg, path: str | None) -> int:
    from ..health import FAIL, install
    results = install.run(cfg, path)
    for result in results:
        print(result.line())
    failed = [r for r in results if r.state == FAIL]
    print(f"{len(failed)} problem(s)" if failed else "all checks passed")
    return 1 if failed else 0


def _router_config(cfg, args) -> int:
    from .. import router_config
    def opennds(cfg, *, portal_url, radius_address, router):
        return router_config.opennds_config(cfg, portal_url=portal_url, router=router, fmt=args.format)
    make = {"mikrotik": router_config.mikrotik_script, "coova": router_config.coova_config,
            "opennds": opennds}[args.kind]
    try:
        if args.login_html and args.kind != "mikrotik":
            raise ValueError("--login-html is for mikrotik; CoovaChilli uses the portal URL directly")
        if args.hotspotd_mac and args.kind != "mikrotik":
            raise ValueError("--hotspotd-mac is for mikrotik (its hotspot ip-binding)")
        extra = {"hotspotd_mac": args.hotspotd_mac} if args.kind == "mikrotik" else {}
        text = make(cfg, portal_url=args.portal_url, radius_address=args.radius_address, router=args.router, **extra)
        if args.login_html:
            with open(args.login_html, "w", encoding="utf-8") as fh:
                router = router_config._router(cfg, "mikrotik", args.router)
                site = router.site if router and router.site != config_mod.DEFAULT_SITE else None
                fh.write(router_config.mikrotik_login_html(args.portal_url or cfg.portal.public_url, site))
    except (ValueError, OSError) as exc:
        print(f"hotspotd: router-config: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    if not sys.stdout.isatty():  # warnings also on stderr for owners who redirect stdout to a file (not twice on a screen)
        for line in text.splitlines():
            if line.startswith("# WARNING: "):
                print(f"hotspotd: warning: {line[11:]}", file=sys.stderr)
    return 0


def _db(args) -> int:
    db = db_mod.models.database
    print(f"schema version {db_mod.schema_version(db)} (latest {db_mod.LATEST})")
    return 0


def _copy(args) -> int:
    from ..storage import dbcopy
    try:
        copied = dbcopy.copy(args.source, args.target,
                             progress=lambda table, rows: print(f"{table:<14} {rows:>10} rows"))
    except dbcopy.CopyError as exc:
        print(f"hotspotd: db copy: {exc}", file=sys.stderr)
        return 1
    print(f"copied {sum(c.rows for c in copied)} rows; counts checked table by table. Point [database] url at "
          f"the new database and start hotspotd.")
    return 0


def _report(cfg, args) -> int:
    from datetime import date, timedelta

    from .. import daily
    today = clock.local(clock.now()).date()
    try:
        day = {"today": today, "yesterday": today - timedelta(days=1)}.get(args.date) or date.fromisoformat(args.date)
    except ValueError:
        print(f"hotspotd: report: --date {args.date!r}: use YYYY-MM-DD, today or yesterday", file=sys.stderr)
        return 2
    venue = cfg.site(args.site) if args.site else None
    if args.site and venue is None:
        print(f"hotspotd: report: no venue {args.site!r} in {cfg.source} (there: {', '.join(cfg.sites)})",
              file=sys.stderr)
        return 2
    report = daily.build(day, venue.name if venue else cfg.portal.site_name, venue.id if venue else None)
    csv = (daily.csv_text(day, venue.id if venue else None, with_site=cfg.multi_site)
           if args.csv or args.mail is not None else "")
    if args.csv == "-":
        sys.stdout.write(csv)
    else:
        print(report.text(), end="")
        if args.csv:
            with open(args.csv, "w", encoding="utf-8", newline="") as fh:
                fh.write(csv)
            print(f"payments written to {args.csv}")
    if args.mail is not None:
        to = args.mail or list(cfg.report.mail_to)
        if not cfg.report.smtp_host or not to:
            print("hotspotd: report: set [report] smtp_host and mail_to (or name addresses after --mail)",
                  file=sys.stderr)
            return 2
        try:
            daily.mail(report, csv, to, cfg.report)
        except (OSError, smtplib.SMTPException) as exc:
            print(f"hotspotd: report: mail to {', '.join(to)} failed: {exc}", file=sys.stderr)
            return 1
        print(f"mailed to {', '.join(to)}", file=sys.stderr if args.csv == "-" else sys.stdout)
    return 0


def _backups(cfg, args) -> int:
    from ..storage import backup
    try:
        path = backup.sqlite_path(cfg.database.url)
        folder = getattr(args, "to", None) or cfg.backup_folder
        timeout = cfg.database.busy_timeout_ms / 1000
        if args.db_command == "backups":
            for b in backup.listing(folder):
                print(f"{b.path}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(b.taken_at))}  {b.size // 1024} KB")
            return 0
        if args.db_command == "backup":
            made = backup.backup(path, folder, keep=cfg.backup.keep, busy_timeout=timeout)
            print(f"backup written: {made.path} ({made.size // 1024} KB)")
            return 0
        if not args.yes:
            answer = input(f"Replace {path} with {args.file}? Stop hotspotd first. [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing changed")
                return 1
        saved = backup.restore(path, args.file, folder, busy_timeout=timeout)
    except backup.BackupError as exc:
        print(f"hotspotd: {exc}", file=sys.stderr)
        return 1
    if saved:
        print(f"the database as it was is saved as {saved.path}")
    print(f"restored {path} from {args.file}; start hotspotd again")
    return 0


def _packages(args, cfg) -> int:
    from .. import catalogue
    from ..storage.models import Package
    cmd = args.pk_command
    site = getattr(args, "site", None)
    if site not in (None, "all") and site not in cfg.sites:
        print(f"hotspotd: no venue {site!r} in {cfg.source} (there: {', '.join(cfg.sites)})", file=sys.stderr)
        return 2
    if cmd in ("add", "edit"):
        p = None
        if cmd == "edit":
            p = Package.get_or_none(Package.id == args.id)
            if p is None:
                print(f"hotspotd: no package {args.id}", file=sys.stderr)
                return 1
        given = {"name": args.name, "name_sw": args.name_sw, "price": args.price, "minutes": args.minutes,
                 "data_mb": args.data_mb, "rate": args.rate, "devices": args.devices}
        values = {**(catalogue.values_of(p) if p else {}), **{k: v for k, v in given.items() if v is not None}}
        fields, errors = catalogue.parse(values)
        if errors:
            for key, text in errors.items():
                said = text if ":" in text else f"{key}: {text}"      # the number checks name their field
                print(f"hotspotd: packages {cmd}: {said}", file=sys.stderr)
            return 2
        if site is not None:
            fields["site"] = None if site == "all" else site
        if cmd == "add":
            p = catalogue.add({**fields, "roams": args.roams})
            print(f"added package {p.id}: {p.name}, KES {p.price}, {_sold_at(p)}")
            return 0
        if args.roams is not None:
            fields["roams"] = args.roams == "yes"
        if args.position is not None:
            fields["position"] = args.position
        catalogue.save(p, fields)
        p = Package.get_by_id(p.id)
        print(f"package {p.id}: {p.name}, KES {p.price}, {'active' if p.active else 'disabled'}, {_sold_at(p)}")
        return 0
    if cmd in ("disable", "enable"):
        p = Package.get_or_none(Package.id == args.id)
        if p is None:
            print(f"hotspotd: no package {args.id}", file=sys.stderr)
            return 1
        catalogue.set_active(p, cmd == "enable")
        p = Package.get_by_id(p.id)
        print(f"package {p.id}: {p.name}, KES {p.price}, {'active' if p.active else 'disabled'}, {_sold_at(p)}")
        return 0
    print(f"{'id':>3}  {'name':<20} {'KES':>6} {'minutes':>8} {'devices':>7}  {'sold at':<16} {'roams':<5}  state")
    for p in Package.select().order_by(Package.position, Package.id):
        print(f"{p.id:>3}  {p.name:<20} {p.price:>6} {p.duration_seconds // 60:>8} {p.devices:>7}  "
              f"{p.site or 'every venue':<16} {'yes' if p.roams else 'no':<5}  {'active' if p.active else 'disabled'}")
    return 0


def _sold_at(p) -> str:
    where = f"venue {p.site}" if p.site else "every venue"
    return where + ("; works at every venue" if p.roams else "")


def _payments(args) -> int:
    from ..storage.models import Payment
    q = Payment.select().order_by(Payment.created_at.desc()).limit(args.limit)
    if args.status:
        q = q.where(Payment.status == args.status)
    print(f"{'created (UTC)':<20} {'status':<9} {'KES':>5} {'phone':<13} {'receipt':<11} checkout id")
    for p in q:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(p.created_at))
        print(f"{created:<20} {p.status:<9} {p.amount:>5} {mask_phone(p.phone):<13} {p.receipt or '-':<11} "
              f"{p.checkout_request_id or '-'}")
    return 0


def _sessions(args) -> int:
    from .. import access
    from ..storage.models import Device, Entitlement
    q = Entitlement.select().order_by(Entitlement.expires_at.desc())
    if not args.all:
        q = q.where(Entitlement.status == "active")
    print(f"{'id':>4} {'status':<9} {'package':<14} {'left (min)':>10}  devices")
    for e in q:
        # the devices that hold the session (or held it to its end): not those that gave their slot up
        macs = ",".join(d.mac for d in Device.select().where(Device.entitlement == e.id, Device.unbound_at.is_null()))
        print(f"{e.id:>4} {e.status:<9} {e.package.name:<14} {access.remaining_seconds(e) // 60:>10}  {macs or '-'}")
    return 0


def _read_password(args) -> str | None:
    """From stdin's first line with --password-stdin, else asked twice without echo; None: give up."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Password again: ")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return None
    if first != again:
        print("hotspotd: the two passwords differ; nothing changed", file=sys.stderr)
        return None
    return first


def _admin(args, cfg) -> int:
    from .. import admins
    from ..storage.models import AdminUser
    if args.admin_command == "list":
        print(f"{'username':<24} {'created (Nairobi)':<17}  {'last sign-in':<17}  {'state':<24}  venues")
        now = clock.now()
        for u in AdminUser.select().order_by(AdminUser.username):
            state = f"locked until {clock.local_stamp(u.locked_until)}" if u.locked_until and u.locked_until > now else "ok"
            last = clock.local_stamp(u.last_login_at) if u.last_login_at else "never"
            venues = "all" if u.site_list is None else ",".join(u.site_list)
            print(f"{u.username:<24} {clock.local_stamp(u.created_at):<17}  {last:<17}  {state:<24}  {venues}")
        return 0
    try:
        # checked before the password is asked for: a typo in a venue id costs no typing
        sites = admins.parse_sites(getattr(args, "sites", None), cfg.sites)
    except admins.AdminError as exc:
        print(f"hotspotd: admin {args.admin_command}: {exc} (in {cfg.source})", file=sys.stderr)
        return 2
    if args.admin_command == "set-sites":
        try:
            admins.set_sites(args.username, sites)
        except admins.AdminError as exc:
            print(f"hotspotd: admin set-sites: {exc}", file=sys.stderr)
            return 1
        print(f"account {args.username!r} now sees " + ("every venue" if sites is None else "venue(s) " + ", ".join(sites)))
        return 0
    exists = AdminUser.select().where(AdminUser.username == args.username).exists()
    if args.admin_command == "create" and exists:
        print(f"hotspotd: admin create: an account {args.username!r} already exists (use set-password)", file=sys.stderr)
        return 1
    if args.admin_command == "set-password" and not exists:
        print(f"hotspotd: admin set-password: no account {args.username!r}", file=sys.stderr)
        return 1
    password = _read_password(args)
    if password is None:
        return 1
    try:
        if args.admin_command == "create":
            admins.create(args.username, password, sites)
            where = "" if sites is None else f" for venue(s) {', '.join(sites)}"
            print(f"account {args.username!r} created{where}; sign in at "
                  f"{cfg.portal.public_url.rstrip('/')}/admin/login")
        else:
            admins.set_password(args.username, password)
            print(f"password of {args.username!r} changed; its other sign-ins are ended")
    except admins.AdminError as exc:
        print(f"hotspotd: admin {args.admin_command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
