"""radius/wire.py, the server's own RADIUS codec, held to pyrad (an independent implementation)
and to the RFCs' rules on lengths; radclient exercises it end to end in tests/radius/test_server.py."""
import hmac
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st
from pyrad import packet
from pyrad.client import Client

from radius import wire
from radius.replies import terminate_time
from radius.server import load_dictionary

SECRET = b"s3cret"
DICT = load_dictionary()


def access_request(**attrs) -> packet.AuthPacket:
    client = Client(server="127.0.0.1", secret=SECRET, dict=DICT)
    req = client.CreateAuthPacket(code=packet.AccessRequest, message_authenticator=True)
    for name, value in attrs.items():
        req[name.replace("_", "-")] = value
    return req


@given(st.binary(max_size=100), st.binary(max_size=300))
def test_hmac_md5_is_rfc_2104(secret, data):
    assert wire.hmac_md5(secret, data) == hmac.digest(secret, data, "md5")


def test_parse_reads_attributes_and_checks_the_message_authenticator():
    req = access_request(User_Name="AA:BB:CC:DD:EE:01", Calling_Station_Id="AA:BB:CC:DD:EE:01",
                         Framed_IP_Address="10.5.50.2")
    parsed = wire.parse(req.RequestPacket())
    assert parsed.code == wire.ACCESS_REQUEST and parsed.identifier == req.id
    assert parsed.text(1) == "AA:BB:CC:DD:EE:01" and parsed.address(8) == "10.5.50.2"
    assert wire.message_authenticator_ok(parsed, SECRET)
    assert not wire.message_authenticator_ok(parsed, b"wrong")


def test_a_reply_verifies_at_pyrad_with_its_signature():
    req = access_request(User_Name="AA:BB:CC:DD:EE:01")
    raw = req.RequestPacket()
    encoder = wire.Encoder(DICT)
    attributes = encoder.attributes({"Session-Timeout": 899, "Class": b"hotspotd:7", "Mikrotik-Rate-Limit": "2M/5M",
                                     "Mikrotik-Total-Limit": 5, "Reply-Message": "hi"})
    reply_raw = wire.reply(wire.parse(raw), wire.ACCESS_ACCEPT, attributes, SECRET)
    reply = packet.AuthPacket(packet=reply_raw, secret=SECRET, dict=DICT)
    # Response Authenticator and Message-Authenticator, as pyrad's client checks a reply
    assert req.VerifyReply(reply, reply_raw, enforce_ma=True)
    forged = reply_raw[:-1] + bytes([reply_raw[-1] ^ 1])
    assert not req.VerifyReply(packet.AuthPacket(packet=forged, secret=SECRET, dict=DICT), forged)
    assert reply["Session-Timeout"] == [899] and reply["Mikrotik-Rate-Limit"] == ["2M/5M"]
    assert reply["Mikrotik-Total-Limit"] == [5] and reply["Class"] == [b"hotspotd:7"]


@pytest.mark.parametrize("data", [
    b"\x01\x01\x00\x13" + bytes(15),                  # shorter than a header
    b"\x01\x01\x00\x30" + bytes(16),                  # header claims more than arrived
    b"\x01\x01\x00\x16" + bytes(16) + b"\x01\x01",    # attribute length 1
    b"\x01\x01\x00\x16" + bytes(16) + b"\x01\x05",    # attribute runs past the packet
    b"\x01\x01\x00\x18" + bytes(16) + b"\x50\x04ab",  # Message-Authenticator of 2 octets
])
def test_lengths_that_lie_are_refused(data):
    with pytest.raises(wire.WireError):
        wire.parse(data)


def test_octets_past_the_length_are_ignored():
    raw = access_request(User_Name="x").RequestPacket()
    assert wire.parse(raw + b"junk").raw == raw


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_terminate_time_is_nairobi_local_time(instant):
    assert terminate_time(instant) == datetime.fromtimestamp(instant, timezone(timedelta(hours=3))).strftime("%Y-%m-%dT%H:%M:%S+03:00")
