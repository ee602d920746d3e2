"""``hotspotd sms list|voucher``: what was sent to customers, and a voucher sent to a phone.

The running daemon sends what is queued (its SMS job); these commands only read and queue, so
they work beside it on the same database.
"""
from __future__ import annotations

import argparse
import sys

from .. import clock
from ..identifiers import InvalidPhone, mask_phone, normalize_phone


def add_parser(sub) -> None:
    sms = sub.add_parser("sms", help="SMS to customers (receipts, reminders, vouchers)").add_subparsers(
        dest="sms_command", required=True)
    sl = sms.add_parser("list", help="the latest SMS, newest first: sent, waiting or failed (and why)")
    sl.add_argument("--limit", type=int, default=20)
    sv = sms.add_parser("voucher", help="make one voucher and send its code to a phone")
    sv.add_argument("--package", type=int, required=True, metavar="ID", help="the package (hotspotd packages list)")
    sv.add_argument("--phone", required=True, help="the customer's number, e.g. 0712345678")
    sv.add_argument("--lang", choices=("en", "sw"), default="sw", help="the SMS's language (default: sw)")


def run(args: argparse.Namespace, cfg) -> int:
    return _list(args) if args.sms_command == "list" else _voucher(args, cfg)


def _list(args) -> int:
    from ..storage.models import SmsMessage
    rows = SmsMessage.select().order_by(SmsMessage.created_at.desc(), SmsMessage.id.desc()).limit(args.limit)
    print(f"{'queued':<16} {'kind':<8} {'phone':<13} {'status':<8} {'tries':>5}  text, or why not")
    for r in rows:
        said = r.text if r.status == "sent" else (r.last_error or "")
        print(f"{clock.local_stamp(r.created_at):<16} {r.kind:<8} {mask_phone(r.phone):<13} {r.status:<8} "
              f"{r.attempts:>5}  {said}")
    return 0


def _voucher(args, cfg) -> int:
    from .. import vouchers
    from ..sms import outbox
    if cfg.sms.provider == "off":
        print("hotspotd: sms voucher: SMS are off; set [sms] provider in the config file first", file=sys.stderr)
        return 2
    try:
        phone = normalize_phone(args.phone)
    except InvalidPhone:
        print(f"hotspotd: sms voucher: {args.phone!r} is not a Kenyan mobile number (e.g. 0712345678)", file=sys.stderr)
        return 2
    try:
        (voucher,) = vouchers.generate(args.package, 1, batch=f"sms {clock.local_stamp(clock.now())}")
    except vouchers.VoucherError:
        print(f"hotspotd: sms voucher: no package {args.package} (see hotspotd packages list)", file=sys.stderr)
        return 2
    outbox.queue_voucher(voucher.code, phone, args.lang)
    print(f"voucher {vouchers.display(voucher.code)} queued for {mask_phone(phone)}; the running hotspotd sends it")
    return 0
