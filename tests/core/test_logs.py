"""The log as the journal gets it: plain lines or JSON, one line per payment step with its CheckoutRequestID."""
import io
import json
import logging
import os

import pytest

from hotspotd import logs
from hotspotd.identifiers import mask_phone

from tests.helpers import PHONE_FORMS, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres


@pytest.fixture
def log_to():
    """``log_to(fmt)`` → a StringIO the whole log goes to in ``fmt``, as ``hotspotd run`` sets it up."""
    root = logging.getLogger()
    level = root.level
    installed = []

    def start(fmt: str, level_name: str = "INFO") -> io.StringIO:
        stream = io.StringIO()
        installed.append(logs.configure(level_name, fmt, stream=stream, force=True))
        return stream

    yield start
    for handler in installed:
        root.removeHandler(handler)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]   # every line parses on its own


def test_json_log_follows_a_payment_by_its_checkout_request_id(make_hotspot, http, log_to):
    stream = log_to("json")
    hs = make_hotspot()
    api = f"{hs.portal_url}/api/portal"
    # one paid by callback, one whose callback never comes: the STK query settles it
    hs.simulator.set_outcome("254711000111", 0, deliver_callback=False)
    by_callback = http.post(f"{api}/pay", json={"phone": "0708374149", "packageId": 1,
                                                "macAddress": "AA:BB:CC:DD:EE:70"}).json()["checkoutRequestId"]
    by_query = http.post(f"{api}/pay", json={"phone": "0711000111", "packageId": 1,
                                             "macAddress": "AA:BB:CC:DD:EE:71"}).json()["checkoutRequestId"]
    for checkout in (by_callback, by_query):
        wait_for(lambda: http.get(f"{api}/status/{checkout}").json()["status"] == "success")

    lines = json_lines(stream)
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line)
        assert line["ts"].endswith("Z") and line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR")

    def steps(checkout):
        mine = [l for l in lines if l.get("checkout_request_id") == checkout]
        assert all(checkout in l["msg"] for l in mine), "the plain text carries the id too"
        return [(l["logger"], l["msg"]) for l in mine]

    paid = steps(by_callback)
    assert any(logger == "hotspotd.payments" and msg.startswith("STK push accepted") for logger, msg in paid)
    assert any(msg.startswith("callback ") and "ResultCode 0" in msg for _, msg in paid)
    assert any("success by callback" in msg for _, msg in paid)
    assert any(logger == "hotspotd.access" and msg.startswith("session ") for logger, msg in paid)
    queried = steps(by_query)
    assert any(msg.startswith("STK query ") and "ResultCode 0" in msg for _, msg in queried)
    assert any("success by query" in msg for _, msg in queried)
    assert any(logger == "hotspotd.access" for logger, _ in queried)
    # the step before there is an id: the payment's own number, the phone masked
    created = [l for l in lines if l["msg"].startswith("payment ") and " created" in l["msg"]]
    assert len(created) == 2 and all(isinstance(l["payment_id"], int) for l in created)
    assert mask_phone("254708374149") in created[0]["msg"]

    text = stream.getvalue()
    for form in PHONE_FORMS:
        assert form not in text, f"a full phone number was logged ({form})"
    assert hs.callback_token not in text


def test_text_lines_with_time_off_the_journal_and_priority_on_it():
    record = logging.LogRecord("hotspotd.payments", logging.WARNING, __file__, 1, "payment %s failed", (7,), None)
    plain = logs.formatter("text", journal=False).format(record)
    assert plain.endswith(" WARNING hotspotd.payments: payment 7 failed") and plain[:4].isdigit()
    assert logs.formatter("text", journal=True).format(record) == "<4>WARNING hotspotd.payments: payment 7 failed"
    record = logging.LogRecord("hotspotd.x", logging.INFO, __file__, 1, "two\nlines", (), None)
    assert logs.formatter("text", journal=True).format(record) == "<6>INFO hotspotd.x: two\n<6>lines"


def test_json_carries_extra_fields_and_tracebacks():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        exc_info = sys.exc_info()
    record = logging.LogRecord("hotspotd.payments", logging.ERROR, __file__, 1, "callback %s failed", (3,), exc_info)
    record.checkout_request_id = "ws_CO_1"
    record.payment_id = None                       # nothing known: left out
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["msg"] == "callback 3 failed" and line["checkout_request_id"] == "ws_CO_1"
    assert "payment_id" not in line and "ValueError: boom" in line["exc"]
    assert "\n" not in logs.JsonFormatter().format(record)


def test_journal_is_recognised_by_device_and_inode(tmp_path, monkeypatch):
    with open(tmp_path / "err", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.to_journal(stream)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")   # inherited, stderr elsewhere
        assert not logs.to_journal(stream)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not logs.to_journal(stream)
    assert not logs.to_journal(io.StringIO())


def test_configure_replaces_its_own_handler_and_leaves_others(log_to):
    root = logging.getLogger()
    foreign = [h for h in root.handlers if not getattr(h, "_hotspotd", False)]
    assert foreign, "pytest's capture handlers are installed"
    assert logs.configure("INFO", "text") is None          # like basicConfig: someone else owns the root
    first = log_to("text")
    second = log_to("json")
    logging.getLogger("hotspotd.test").info("hello %s", "there")
    assert first.getvalue() == ""
    assert json_lines(second)[-1]["msg"] == "hello there"
    assert [h for h in root.handlers if not getattr(h, "_hotspotd", False)] == foreign
    assert logging.getLogger("apscheduler").level == logging.WARNING
    assert logging.getLogger("peewee").level == logging.INFO
