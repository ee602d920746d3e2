"""``hotspotd simulate daraja|routeros``: one simulator on its own, until SIGINT or SIGTERM."""
from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading

from ..config import parse_listen

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    """The ``simulate`` sub-commands, on the ``hotspotd`` command's sub-parsers."""
    sim = sub.add_parser("simulate", help="run a simulator on its own").add_subparsers(dest="sim", required=True)
    sd = sim.add_parser("daraja", help="an M-Pesa Daraja (STK Push) API")
    sd.add_argument("--listen", default="127.0.0.1:8900", help="host:port (port 0: any free one)")
    sd.add_argument("--callback-delay", type=float, default=2.0, help="seconds before a callback is sent")
    sd.add_argument("--final-after", type=float, default=2.0, help="seconds before the STK query gives the result")
    sd.add_argument("--timing", choices=("instant", "realistic"), default="instant",
                    help="realistic: the sandbox's timings drawn per payment, lost and late callbacks "
                         "(instead of the two delays above)")
    sd.add_argument("--seed", type=int, help="realistic: the random seed, to replay a run (default: a new one, logged)")
    sd.add_argument("--time-scale", type=float, default=1.0, help="realistic: every delay divided by this")
    sd.add_argument("--lost-callbacks", type=float, default=0.1, metavar="RATE",
                    help="realistic: the fraction of callbacks that never come")
    sd.add_argument("--late-callbacks", type=float, default=0.1, metavar="RATE",
                    help="realistic: the fraction of callbacks that come after --late-after")
    sd.add_argument("--late-after", type=float, metavar="SECONDS",
                    help="realistic: the payment timeout late callbacks miss (default 180 / --time-scale)")
    sd.add_argument("--rule-limit", type=float, default=120.0, metavar="SECONDS",
                    help="the same amount from the same phone to the same shortcode again within this ends "
                         "in ResultCode 17 'Rule limited.' (0: never)")
    sd.add_argument("--spike-limit", type=int, default=100, metavar="N",
                    help="business calls a second before 500.003.02 'Spike arrest violation' (0: no limit)")
    sd.add_argument("--forgiving", action="store_true",
                    help="tokens live side by side, no subscriber lock, the query never relapses to "
                         "'being processed' after its final answer (all three are Daraja's, on by default)")
    sr = sim.add_parser("routeros", help="a MikroTik RouterOS API server with hotspot menus")
    sr.add_argument("--listen", default="127.0.0.1:8728", help="host:port (port 0: any free one)")
    sr.add_argument("--user", default="admin", help="API user")
    sr.add_argument("--password", default="", help="API password")
    sr.add_argument("--identity", default="hotspotd-sim", help="/system/identity name")
    sr.add_argument("--host", action="append", default=[], metavar="MAC=IP",
                    help="a device the hotspot has already seen (repeatable)")
    sr.add_argument("--no-empty", action="store_true", help="no !empty replies, like RouterOS before 7.18")
    sr.add_argument("--radius", metavar="HOST:PORT",
                    help="the hotspot's RADIUS server (auth port; accounting goes to PORT+1): MAC and API logins "
                         "ask it, sessions are accounted to it")
    sr.add_argument("--secret", default="testing123", help="RADIUS secret for --radius")
    sr.add_argument("--incoming", metavar="HOST:PORT", help="with --radius: answer Disconnect/CoA-Requests here "
                    "(/radius incoming; a router listens on 3799)")
    sr.add_argument("--script", action="append", default=[], metavar="FILE",
                    help="run this RouterOS script first, as pasted into the terminal "
                         "(e.g. hotspotd router-config mikrotik's output; repeatable)")


def run(args: argparse.Namespace) -> int:
    # the handlers go in before anything is listening: a SIGTERM sent the moment "listening on" is read
    # stops the simulator cleanly instead of killing it (a clean-clone CI run met exit -15)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    return _daraja(args, stopping) if args.sim == "daraja" else _routeros(args, stopping)


def _daraja(args, stopping: threading.Event) -> int:
    from ..testing.daraja import DarajaSimulator
    try:
        host, port = parse_listen(args.listen)
    except ValueError:
        print("hotspotd: simulate daraja: --listen takes host:port, e.g. 127.0.0.1:8900", file=sys.stderr)
        return 2
    try:
        sim = DarajaSimulator(host, port, callback_delay=args.callback_delay, final_after=args.final_after,
                              timing=args.timing, seed=args.seed, time_scale=args.time_scale,
                              lost_callback_rate=args.lost_callbacks, late_callback_rate=args.late_callbacks,
                              late_callback_after=args.late_after)
    except ValueError as exc:
        print(f"hotspotd: simulate daraja: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hotspotd: simulate daraja: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    sim.rule_limit_seconds, sim.spike_limit = args.rule_limit, args.spike_limit
    if args.forgiving:
        sim.set_quirks(single_token=False, lock_subscriber=False, relapse=False)
    with sim:
        log.info("Daraja simulator at %s; consumer key %r, the sandbox passkey; phone 2547000NNNNN ends with "
                 "ResultCode NNNNN", sim.url, sim.consumer_key)
        stopping.wait()
    log.info("Daraja simulator stopped")
    return 0


def _routeros(args, stopping: threading.Event) -> int:
    from ..testing.routeros import RouterOSSimulator
    try:
        host, port = parse_listen(args.listen)
        radius = parse_listen(args.radius) if args.radius else None
        incoming = parse_listen(args.incoming) if args.incoming and radius else None
        hosts = [item.split("=", 1) for item in args.host]
        if any(len(h) != 2 or not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", h[0]) for h in hosts):
            raise ValueError(args.host)
    except ValueError:
        print("hotspotd: simulate routeros: --listen and --radius take host:port, --host AA:BB:CC:DD:EE:FF=10.5.50.2",
              file=sys.stderr)
        return 2
    try:
        sim = RouterOSSimulator(host, port, username=args.user, password=args.password, identity=args.identity,
                                empty_reply=not args.no_empty, auto_hosts=True)
    except OSError as exc:
        print(f"hotspotd: simulate routeros: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    side = None
    from ..testing.routeros_script import ScriptError
    for path in args.script:
        try:
            with open(path, encoding="utf-8") as fh:
                for line in sim.run_script(fh.read()):
                    print(line, flush=True)
        except (OSError, ScriptError) as exc:
            sim.stop()
            print(f"hotspotd: simulate routeros: {path}: {exc}", file=sys.stderr)
            return 1
    with sim:
        if radius:
            from radius.testing.mikrotik import HotspotRadius
            try:
                side = HotspotRadius(sim, incoming=incoming).start()
            except OSError as exc:
                print(f"hotspotd: simulate routeros: cannot listen on {args.incoming}: {exc}", file=sys.stderr)
                return 1
            side.point_at(radius, (radius[0], radius[1] + 1), args.secret)
        for mac, ip in hosts:
            sim.add_host(mac, ip)
        address, bound = sim.address
        print(f"RouterOS API simulator listening on {address}:{bound} (user {args.user!r})", flush=True)
        try:
            stopping.wait()
        finally:
            if side is not None:
                side.stop()
    return 0
