"""Property-based tests of the parsers that read what others wrote: Daraja's callbacks, rate
strings and the numbers RADIUS carries, config files, voucher codes, a router's login variables.
(Phone numbers and MAC addresses: tests/core/test_identifiers.py.)

Each parser either returns what its contract says or raises its one documented error."""
from __future__ import annotations

import json
import random
import re
import string
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st
from pyrad import packet

from hotspotd import config, router_login, vouchers
from hotspotd.access import Grant
from hotspotd.config import ConfigError, from_dict, load
from hotspotd.payments import parse_callback
from radius.replies import accept_attributes, parse_rate, split64, terminate_time
from radius.server import load_dictionary

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

#: any JSON value Python's json module reads, edges included (lone surrogates, huge numbers)
json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=10**400)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
                | st.sampled_from(["\ud800", "1e999", "-1e999", "", " 0 "]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)


# --- Daraja callbacks -------------------------------------------------------------------------------
CALLBACK_KEYS = {"checkout_request_id": str, "result_code": str, "result_desc": str, "merchant_request_id": str,
                 "amount": (int, float), "receipt": str, "phone": str, "transaction_date": str}
LIMITS = {"checkout_request_id": 64, "result_code": 32, "result_desc": 500, "merchant_request_id": 64,
          "receipt": 32, "phone": 12, "transaction_date": 14}


def check_parsed(body) -> dict | None:
    """parse_callback's contract: ValueError, or the documented keys with storable values."""
    try:
        out = parse_callback(body)
    except ValueError:
        return None
    assert set(out) <= set(CALLBACK_KEYS) and {"checkout_request_id", "result_code", "result_desc"} <= set(out)
    for key, value in out.items():
        assert isinstance(value, CALLBACK_KEYS[key]) and not isinstance(value, bool), (key, value)
        if isinstance(value, str):
            assert len(value) <= LIMITS[key], (key, value)
            value.encode("utf-8")   # the database stores it: no lone surrogates
    if "amount" in out:
        assert abs(out["amount"]) < float("inf")
    return out


@given(st.binary(max_size=300))
def test_callback_parser_takes_any_bytes(body):
    check_parsed(body)


@given(json_values)
def test_callback_parser_takes_any_json(value):
    check_parsed(json.dumps(value))


item_names = st.sampled_from(["Amount", "MpesaReceiptNumber", "TransactionDate", "PhoneNumber", "Balance"]) | json_scalars
stk_shaped = st.fixed_dictionaries({"Body": st.fixed_dictionaries({"stkCallback": st.fixed_dictionaries(
    {"CheckoutRequestID": st.text(max_size=70) | json_values,
     "ResultCode": st.sampled_from([0, "0", 1032, " 1037 ", True]) | json_values},
    optional={"MerchantRequestID": json_values, "ResultDesc": json_values,
              "CallbackMetadata": json_values | st.fixed_dictionaries({"Item": json_values | st.lists(
                  json_values | st.fixed_dictionaries({"Name": item_names}, optional={"Value": json_values}),
                  max_size=6)})})})})


@given(stk_shaped)
@example({"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1", "ResultCode": 0, "CallbackMetadata": True}}})
@example({"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1", "ResultCode": 0,
                                   "CallbackMetadata": {"Item": [{"Name": ["Amount"]}, {"Name": "Amount", "Value": 10**400}]}}}})
@example({"Body": {"stkCallback": {"CheckoutRequestID": "\ud800", "ResultCode": 0}}})
@example({"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1", "ResultCode": "\ud800", "ResultDesc": "\udfff",
                                   "MerchantRequestID": -2**220}}})
def test_callback_parser_takes_stk_shaped_nonsense(body):
    check_parsed(json.dumps(body))


@given(amount=st.integers(1, 250_000), as_float=st.booleans(), receipt=st.from_regex(r"[A-Z0-9]{10}", fullmatch=True),
       phone=st.from_regex(r"2547[0-9]{8}", fullmatch=True), phone_as_int=st.booleans(),
       date=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2099, 12, 31)),
       checkout=st.from_regex(r"ws_CO_[0-9]{8,24}", fullmatch=True), code=st.sampled_from([0, "0", 1032, "1032"]),
       extra=st.lists(st.fixed_dictionaries({"Name": st.text(max_size=12).filter(
           lambda n: n not in ("Amount", "MpesaReceiptNumber", "TransactionDate", "PhoneNumber")),
           "Value": json_values}), max_size=3),
       order=st.randoms(use_true_random=False))
def test_callback_round_trip(amount, as_float, receipt, phone, phone_as_int, date, checkout, code, extra, order):
    """A well-formed body built from random values reads back as those values, items in any order."""
    stamp = date.strftime("%Y%m%d%H%M%S")
    items = [{"Name": "Amount", "Value": float(amount) if as_float else amount},
             {"Name": "MpesaReceiptNumber", "Value": receipt},
             {"Name": "TransactionDate", "Value": int(stamp)},
             {"Name": "PhoneNumber", "Value": int(phone) if phone_as_int else phone}] + extra
    order.shuffle(items)
    body = {"Body": {"stkCallback": {"MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": checkout,
                                     "ResultCode": code, "ResultDesc": "The service request is processed successfully.",
                                     "CallbackMetadata": {"Item": items}}}}
    out = check_parsed(json.dumps(body))
    assert out == {"checkout_request_id": checkout, "result_code": str(code), "merchant_request_id": "29115-34620561-1",
                   "result_desc": "The service request is processed successfully.", "amount": amount,
                   "receipt": receipt, "phone": phone, "transaction_date": stamp}
    assert type(out["amount"]) is int


# --- RADIUS reply values ----------------------------------------------------------------------------
UNITS = {"": 1, "k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000, "g": 1_000_000_000, "G": 1_000_000_000}
#: what the dashboard lets an owner type as a package's rate (portal_web/admin.py)
rate_parts = st.tuples(st.integers(0, 10**12) | st.decimals(0, 10**6, places=3).map(str), st.sampled_from(sorted(UNITS)))
rates = st.tuples(rate_parts, rate_parts).map(lambda t: f"{t[0][0]}{t[0][1]}/{t[1][0]}{t[1][1]}")


@given(st.text(max_size=40) | st.from_regex(r"[\d.kKmMgG/ ]{0,40}", fullmatch=True))
def test_parse_rate_never_raises(text):
    out = parse_rate(text)
    assert out is None or (len(out) == 2 and all(isinstance(v, int) and v >= 0 for v in out))


@given(rate_parts, rate_parts, st.sampled_from(["", " 4M/8M", " 4M/8M 1M/2M 10/10 8"]))
@example(("4.35", "M"), ("4611686019", "G"), "")    # float arithmetic made these 4349999 and ...512
def test_parse_rate_reads_mikrotik_rates(up, down, burst):
    text = f"{up[0]}{up[1]}/{down[0]}{down[1]}{burst}"
    assert parse_rate(text) == (int(Decimal(up[0]) * UNITS[up[1]]), int(Decimal(down[0]) * UNITS[down[1]]))


@given(st.integers(0, 2**64 - 1))
def test_split64_recombines(value):
    low, high = split64(value)
    assert 0 <= low < 2**32 and 0 <= high < 2**32
    assert high << 32 | low == value


@given(st.integers(-2**70, -1) | st.integers(2**64, 2**70))
def test_split64_clamps(value):
    low, high = split64(value)
    assert 0 <= low < 2**32 and 0 <= high < 2**32
    if value < 0:
        assert (low, high) == (0, 0)
    else:
        assert high == 2**32 - 1


@given(st.floats(0, 2**32, allow_nan=False))
def test_terminate_time_is_nairobi_time_of_the_instant(ts):
    text = terminate_time(ts)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+03:00", text)
    assert abs(datetime.fromisoformat(text).timestamp() - ts) <= 1


DICT = load_dictionary()
grants = st.builds(
    Grant, entitlement_id=st.integers(1, 2**31), mac=st.just("AA:BB:CC:DD:EE:01"), package_name=st.text(max_size=64),
    expires_at=st.floats(0, 2**32 - 1), remaining_seconds=st.integers(0, 400 * 86400),
    data_cap_bytes=st.none() | st.integers(0, 10**13), bytes_left=st.none() | st.integers(0, 10**13),
    rate_limit=st.none() | rates)


@given(grants, st.sampled_from(["mikrotik", "coova"]), st.integers(0, 86400), st.integers(0, 86400))
@example(Grant(1, "AA:BB:CC:DD:EE:01", "fast", 0.0, 60, None, None, "5G/10G"), "coova", 0, 0)   # was no answer
def test_accept_attributes_always_encode(grant, kind, idle, interim):
    """Whatever package the owner made, the Accept can be put on the wire (else the NAS hears nothing)."""
    assume(grant.rate_limit is None or len(grant.rate_limit) <= 32)   # the column's size
    reply = packet.AuthPacket(code=packet.AccessRequest, secret=b"s", dict=DICT, authenticator=bytes(16)).CreateReply()
    for name, value in accept_attributes(grant, kind, idle, interim).items():
        reply[name] = value
    raw = reply.ReplyPacket()
    decoded = packet.AuthPacket(packet=raw, secret=b"s", dict=DICT)
    assert decoded["Session-Timeout"][0] == max(grant.remaining_seconds, 1)


# --- configuration ----------------------------------------------------------------------------------
toml_scalars = (st.text(max_size=30) | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.booleans()
                | st.sampled_from(["0.0.0.0:8080", "[::1]:0", "127.0.0.1:99999", "http://[::1", "https://x.example/cb",
                                   "sqlite:////tmp/x.db", "sqlite:///rel.db", "postgresql://u@h/d", "10.0.0.0/8",
                                   "10.0.0.300", "\x00", "ü", "5/minute", "production", "sandbox", "mikrotik", "coova"]))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
schema_keys = {table: st.sampled_from(sorted(options)) | st.text(max_size=8) for table, options in config.SCHEMA.items()}
tables = st.one_of(
    *[st.tuples(st.just(table), st.dictionaries(keys, toml_values, max_size=4)) for table, keys in schema_keys.items()],
    st.tuples(st.just("radius"), st.fixed_dictionaries({"clients": st.lists(st.dictionaries(
        st.sampled_from(sorted(config.ARRAY_SCHEMA["radius.clients"])) | st.text(max_size=6), toml_values,
        max_size=5), max_size=3) | toml_values})),
    st.tuples(st.just("routers"), st.lists(st.dictionaries(
        st.sampled_from(sorted(config.ARRAY_SCHEMA["routers"])) | st.text(max_size=6), toml_values, max_size=6),
        max_size=3) | toml_values),
    st.tuples(st.text(max_size=8), toml_values))
config_dicts = st.lists(tables, max_size=4).map(dict)
envs = st.dictionaries(st.sampled_from(sorted(config.ENV_OVERRIDES)), st.text(max_size=30), max_size=3)


def check_config_error(err: ConfigError, source: str) -> None:
    """One line naming the file, the table and the key (quoted when not printable)."""
    shown = lambda name: name if name.isprintable() else repr(name)
    message = str(err)
    where = f"[{shown(err.table)}]" + (f" {shown(err.key)}" if err.key else "")
    assert message.startswith(f"{source}: {where}: "), message
    assert message.isprintable() and err.problem, message


@settings(max_examples=200)
@given(config_dicts, envs)
@example({"portal": {"\n": 1}}, {})              # the message was two lines
@example({"radius": {"idle_timeout": -1}}, {})    # accepted, then no Access-Accept could be encoded
def test_config_from_dict_raises_only_config_error(data, env):
    try:
        cfg = from_dict(data, "site.toml", env)
    except ConfigError as err:
        check_config_error(err, "site.toml")
        return
    # what it accepts, RADIUS can send: Idle-Timeout and Acct-Interim-Interval are 32-bit
    grant = Grant(1, "AA:BB:CC:DD:EE:01", "p", 0.0, 60, None, None, None)
    reply = packet.AuthPacket(code=packet.AccessRequest, secret=b"s", dict=DICT, authenticator=bytes(16)).CreateReply()
    for client in cfg.radius_clients:
        for name, value in accept_attributes(grant, client.kind, cfg.radius.idle_timeout,
                                             cfg.radius.interim_interval).items():
            reply[name] = value


@settings(max_examples=100)
@given(st.dictionaries(st.sampled_from(["idle_timeout", "interim_interval", "auth_port", "acct_port"]),
                       st.integers(-2**40, 2**40), min_size=1))
@example({"interim_interval": 2**32})
def test_radius_numbers_out_of_range_are_config_errors(values):
    try:
        cfg = from_dict({"radius": values}, "site.toml")
    except ConfigError as err:
        assert err.table == "radius" and err.key in values
        return
    grant = Grant(1, "AA:BB:CC:DD:EE:01", "p", 0.0, 60, None, None, None)
    reply = packet.AuthPacket(code=packet.AccessRequest, secret=b"s", dict=DICT, authenticator=bytes(16)).CreateReply()
    for name, value in accept_attributes(grant, "mikrotik", cfg.radius.idle_timeout, cfg.radius.interim_interval).items():
        reply[name] = value


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("configs")


@settings(max_examples=100)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.sampled_from([b"\xef\xbb\xbf[portal]\n", b"[portal]\nthreads = 08\n"]))
@example(b'[portal]\nsite_name = "Caf\xe9"\n')   # saved as Latin-1: was a UnicodeDecodeError traceback
def test_config_load_raises_only_config_error(config_dir, content):
    path = config_dir / "hotspotd.toml"
    path.write_bytes(content)
    try:
        load(path, env={})
    except ConfigError as err:
        check_config_error(err, str(path))


def test_config_load_of_something_unreadable_is_a_config_error(config_dir):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load(config_dir, env={})   # a directory


# --- vouchers ---------------------------------------------------------------------------------------
codes = st.text(vouchers.ALPHABET, min_size=vouchers.LENGTH, max_size=vouchers.LENGTH)


@given(st.text(max_size=50) | st.none() | st.integers())
def test_voucher_normalize(text):
    out = vouchers.normalize(text)
    assert len(out) <= 32 and not re.search(r"[\s\-_.]", out)
    assert vouchers.normalize(out) == out


@given(codes, st.sampled_from(["{}", " {} ", "{}\n"]), st.booleans(), st.sampled_from(["-", " ", "", ".", "_"]))
def test_voucher_codes_survive_how_people_type_them(code, frame, lower, sep):
    typed = frame.format(vouchers.display(code).replace("-", sep))
    assert vouchers.normalize(typed.lower() if lower else typed) == code


def test_voucher_redeem_refuses_anything_but_a_code(hotspot):
    from hotspotd.storage.models import Package, Voucher

    package = Package.select().first()
    issued = {v.code for v in vouchers.generate(package.id, 3)}

    @settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.text(max_size=40) | codes | st.sampled_from(sorted(issued)).map(vouchers.display))
    def redeem_anything(text):
        try:
            ent = vouchers.redeem(text, "AA:BB:CC:DD:EE:01")
        except vouchers.VoucherError as exc:
            assert str(exc)
            return
        assert vouchers.normalize(text) in issued and ent.package.id == package.id

    redeem_anything()
    used = Voucher.select().where(Voucher.redeemed_at.is_null(False)).count()
    assert used <= len(issued)


# --- the router's login variables -------------------------------------------------------------------
@given(st.binary(max_size=40))
def test_unescape_octal_inverts_mikrotik_escaping(raw):
    rng = random.Random(raw)
    escaped = "".join(f"\\{b:03o}" if b > 126 or b < 32 or rng.random() < 0.5 or b == 92 else chr(b) for b in raw)
    assert router_login.unescape_octal(escaped) == raw


@given(st.text(string.printable + "\x80\xff", max_size=40))
def test_unescape_octal_reads_latin1_text(text):
    assert isinstance(router_login.unescape_octal(text), bytes)


router_vars = st.sampled_from(router_login.ROUTER_VARS)
login_values = st.sampled_from(["http://10.5.50.1/login", "http://hotspot.lan/login", "https://8.8.8.8/login",
                                "10.5.50.1", "192.168.182.1", "8.8.8.8", "fe80::1", "3990", "0", "99999",
                                "\\001\\371", "00" * 16, "http://[10.0.0.1/"]) | json_values


@given(st.dictionaries(router_vars | st.text(max_size=6), login_values, max_size=8), st.text(max_size=12))
def test_login_form_from_any_context(ctx, uamsecret):
    """Whatever a browser put in the context, there is a form to a router on the local network or none."""
    form = router_login.login_form(ctx, "hs1", "0123456789", uamsecret)
    if form is None:
        return
    assert form.router in ("mikrotik", "coova") and form.method in ("GET", "POST")
    assert router_login._local_url(form.action), form.action
    assert all(isinstance(v, str) for v in form.fields.values())
