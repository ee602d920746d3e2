"""``hotspotd mpesa register-urls|register-pull``: tell Safaricom where payments made from the
M-Pesa menu (C2B) are confirmed, and register Pull Transactions (the statement). In production Register URL is one-time (changing the URLs afterwards takes
two operators on the Daraja portal), so the command shows what it will register and asks first.
On the simulator the daemon registers them itself at start."""
from __future__ import annotations

import argparse
import sys

from .. import config as config_mod
from ..daraja.client import BASE_URLS, DarajaClient, DarajaError


def add_parser(sub) -> None:
    mp = sub.add_parser("mpesa", help="M-Pesa set-up at Safaricom").add_subparsers(dest="mpesa_command", required=True)
    ru = mp.add_parser("register-urls", help="register the C2B confirmation and validation URLs (payments from "
                       "the M-Pesa menu); one-time in production")
    ru.add_argument("--site", metavar="ID", help="a venue with its own paybill or till (default: [mpesa]'s)")
    ru.add_argument("--version", choices=("v1", "v2"), default="v2",
                    help="v2 (the payer's number masked, default) or v1 (as a SHA-256)")
    ru.add_argument("--yes", action="store_true", help="register without asking (production: it cannot be undone "
                    "here)")
    rp = mp.add_parser("register-pull", help="register Pull Transactions (the shortcode's M-Pesa statement), once")
    rp.add_argument("--site", metavar="ID", help="a venue with its own paybill or till (default: [mpesa]'s)")
    rp.add_argument("--nominated", metavar="PHONE", help="the owner's M-Pesa number Safaricom names in the "
                    "registration (default: [mpesa] pull_nominated_number)")


def run(args: argparse.Namespace, cfg) -> int:
    if args.mpesa_command == "register-pull":
        return _register_pull(args, cfg)
    return _register_urls(args, cfg)


def _client(cfg, account) -> DarajaClient:
    return DarajaClient(cfg.mpesa.base_url or BASE_URLS[cfg.mpesa.environment], account.consumer_key,
                        account.consumer_secret, account.shortcode, account.passkey,
                        transaction_type=account.transaction_type, timeout=float(cfg.mpesa.timeout_seconds))


def _register_pull(args, cfg) -> int:
    from ..identifiers import InvalidPhone, normalize_phone
    from ..storage import db as db_mod
    if cfg.simulated:
        print("simulator environment: hotspotd registers Pull with its simulator at start "
              "(with [mpesa] pull_every_seconds set); nothing to do")
        return 0
    site = cfg.site(args.site)
    if site is None:
        print(f"hotspotd: mpesa register-pull: no venue {args.site!r} (see [[sites]])", file=sys.stderr)
        return 2
    try:
        nominated = normalize_phone(args.nominated or cfg.mpesa.pull_nominated_number)
    except InvalidPhone:
        print("hotspotd: mpesa register-pull: give --nominated 07… (the owner's M-Pesa number), or set [mpesa] "
              "pull_nominated_number", file=sys.stderr)
        return 2
    if not cfg.mpesa.callback_url:
        print("hotspotd: mpesa register-pull: set [mpesa] callback_url (this box's public HTTPS address) first",
              file=sys.stderr)
        return 2
    account = site.account or cfg.default_account
    callback = config_mod.callback_url(cfg, db_mod.get_setting("callback_token") or "", "").rstrip("/") + "/pull"
    client = _client(cfg, account)
    try:
        said = client.pull_register(account.shortcode, nominated, callback)
    except DarajaError as exc:
        print(f"hotspotd: mpesa register-pull: Daraja refused: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"{account.shortcode}: {said}; set [mpesa] pull_every_seconds (e.g. 600) so hotspotd pulls the statement")
    return 0


def _register_urls(args, cfg) -> int:
    from ..storage import db as db_mod
    if cfg.simulated:
        print("simulator environment: hotspotd registers the C2B URLs with its simulator at start; nothing to do")
        return 0
    site = cfg.site(args.site)
    if site is None:
        print(f"hotspotd: mpesa register-urls: no venue {args.site!r} (see [[sites]])", file=sys.stderr)
        return 2
    if not cfg.mpesa.callback_url:
        print("hotspotd: mpesa register-urls: set [mpesa] callback_url (this box's public HTTPS address) first",
              file=sys.stderr)
        return 2
    base = config_mod.callback_url(cfg, db_mod.get_setting("callback_token") or "", "").rstrip("/")
    confirmation, validation = f"{base}/c2b/confirmation", f"{base}/c2b/validation"
    account = site.account or cfg.default_account
    payee = cfg.payee(site.id)
    numbers = sorted({payee.number, account.shortcode})
    print(f"shortcode(s): {', '.join(numbers)} ({payee.kind}); C2B {args.version}")
    print(f"  confirmation  {_shown(confirmation)}")
    print(f"  validation    {_shown(validation)}")
    if cfg.mpesa.environment == "production" and not args.yes:
        if not sys.stdin.isatty():
            print("hotspotd: mpesa register-urls: production registration is one-time; re-run with --yes",
                  file=sys.stderr)
            return 2
        if input("Register these with Safaricom? It is one-time in production. Type yes: ").strip() != "yes":
            print("not registered")
            return 1
    client = _client(cfg, account)
    try:
        for number in numbers:
            said = client.register_c2b_urls(number, confirmation, validation, version=args.version)
            print(f"{number}: {said}")
    except DarajaError as exc:
        print(f"hotspotd: mpesa register-urls: Daraja refused: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


def _shown(url: str) -> str:
    """The URL with its secret token masked (as the health page shows it)."""
    head, sep, tail = url.partition("/cb/")
    token, _, rest = tail.partition("/")
    return f"{head}{sep}{token[:4]}…/{rest}" if sep else url
