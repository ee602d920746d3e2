"""hotspotd report: a day's figures as text, CSV and an e-mail through a real SMTP server."""
import email
import socket
import time

import pytest

from hotspotd import clock
from hotspotd.service import cli
from hotspotd.storage.models import Payment

from tests.helpers import pay, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres


@pytest.fixture
def day(make_hotspot, http, tmp_path):
    hs = make_hotspot()
    # two customers pay (one customer paying the same package twice in 2 minutes is rule-limited, 17)
    for phone, mac in (("0708374149", "AA:BB:CC:00:44:01"), ("0711000601", "AA:BB:CC:00:44:02"),
                       ("254700001032", "AA:BB:CC:00:44:03")):
        checkout = pay(http, hs, phone, mac=mac).json()["checkoutRequestId"]
        wait_for(lambda: Payment.get(Payment.checkout_request_id == checkout).status != "pending")
    hs.stop()
    config = tmp_path / "h.toml"
    config.write_text(f'[database]\nurl = "{hs.config.database.url}"\n[portal]\nsite_name = "Mama Mboga Cafe"\n')
    return config


def test_text_and_csv(day, tmp_path, capsys):
    assert cli.main(["--config", str(day), "report", "--csv", str(tmp_path / "d.csv")]) == 0
    out = capsys.readouterr().out
    assert "Mama Mboga Cafe" in out and "Revenue: KES 20 from 2 payment(s)" in out
    assert "success" in out and "cancelled" in out and "cancelled 1" in out
    rows = (tmp_path / "d.csv").read_text().splitlines()
    assert len(rows) == 4 and "254708374149" in rows[1] + rows[2] + rows[3]
    yesterday = clock.local(clock.now() - 86400).date().isoformat()
    assert cli.main(["--config", str(day), "report", "--date", yesterday]) == 0
    assert "Revenue: KES 0" in capsys.readouterr().out
    assert cli.main(["--config", str(day), "report", "--date", "31/12/2026"]) == 2


def test_mail_through_smtp(day, capsys):
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope)
            return "250 OK"

    inbox = Inbox()
    with socket.socket() as probe:            # aiosmtpd's Controller wants a port number up front
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        day.write_text(day.read_text() + f'[report]\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\n'
                                         'smtp_starttls = false\nmail_from = "box@cafe.example"\n'
                                         'mail_to = ["owner@cafe.example"]\n')
        assert cli.main(["--config", str(day), "report", "--mail"]) == 0
        deadline = time.monotonic() + 5
        while not inbox.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        smtp.stop()
    assert len(inbox.messages) == 1 and inbox.messages[0].rcpt_tos == ["owner@cafe.example"]
    msg = email.message_from_bytes(inbox.messages[0].content)
    assert msg["Subject"].startswith("Mama Mboga Cafe: KES 20 on")
    parts = {p.get_filename(): p for p in msg.walk() if p.get_filename()}
    assert len(parts) == 1 and next(iter(parts)).startswith("payments-")
    assert "mailed to owner@cafe.example" in capsys.readouterr().out


def test_mail_needs_a_server(day, capsys):
    assert cli.main(["--config", str(day), "report", "--mail"]) == 2
    assert "smtp_host" in capsys.readouterr().err
