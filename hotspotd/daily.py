"""``hotspotd report``: one day's takings for the owner, as text, CSV or an e-mail.

The day is a Nairobi day. Revenue counts payments that succeeded that day; the outcome table
counts the prompts sent that day by what became of them; sessions are those that started that
day (paid or voucher). Figures come from :mod:`hotspotd.reports`, the dashboard's source too.
"""
from __future__ import annotations

import io
import smtplib
import ssl
from dataclasses import dataclass
from datetime import date, timedelta
from email.message import EmailMessage

import peewee as pw

from . import clock, formatting, reports
from .storage.models import Entitlement, Payment, Voucher


@dataclass(frozen=True)
class DayReport:
    day: date
    site: str
    revenue: int
    paid: int
    outcomes: list[tuple[str, int, int]]      # (status, count, KES)
    failures: list[tuple[str, int]]
    sessions_started: int
    vouchers_redeemed: int
    funnel: reports.Funnel

    def text(self) -> str:
        lines = [f"{self.site}: {self.day:%A %d %B %Y}",
                 f"Revenue: {formatting.money(self.revenue)} from {self.paid} payment(s)",
                 f"Prompts sent: {self.funnel.sent}, paid: {self.funnel.paid} ({self.funnel.rate(self.funnel.paid)}%), "
                 f"online: {self.funnel.online} ({self.funnel.rate(self.funnel.online)}%)", "",
                 f"{'outcome':<12}{'count':>7}{'KES':>10}"]
        lines += [f"{status:<12}{count:>7}{amount:>10,}" for status, count, amount in self.outcomes] or ["(no payments)"]
        if self.failures:
            lines += ["", "Why payments failed: " + ", ".join(f"{why.replace('_', ' ')} {n}" for why, n in self.failures)]
        lines += ["", f"Sessions started: {self.sessions_started} (vouchers: {self.vouchers_redeemed})"]
        return "\n".join(lines) + "\n"


def build(day: date, site: str, venue: str | None = None) -> DayReport:
    """The report of ``day`` headed ``site`` (a name), for one venue (its id) or all (None)."""
    start, end = clock.day_start(day), clock.day_start(day + timedelta(days=1))
    in_day = (Payment.created_at >= start) & (Payment.created_at < end)
    at = (lambda column: column == venue) if venue else (lambda column: True)
    outcomes = list(Payment.select(Payment.status, pw.fn.COUNT(Payment.id), pw.fn.COALESCE(pw.fn.SUM(Payment.amount), 0))
                    .where(in_day, at(Payment.site)).group_by(Payment.status)
                    .order_by(pw.fn.COUNT(Payment.id).desc()).tuples())
    paid = Payment.select().where(Payment.status == "success", Payment.completed_at >= start,
                                  Payment.completed_at < end, at(Payment.site)).count()
    funnel = reports.funnel(start, end, venue)
    started = Entitlement.select().where(Entitlement.started_at >= start, Entitlement.started_at < end,
                                         at(Entitlement.site)).count()
    vouchers = (Voucher.select().join(Entitlement, on=(Voucher.entitlement == Entitlement.id))
                .where(Voucher.redeemed_at >= start, Voucher.redeemed_at < end, at(Entitlement.site)).count())
    return DayReport(day=day, site=site, revenue=reports.revenue(start, end, venue), paid=paid,
                     outcomes=[(s, int(n), int(a)) for s, n, a in outcomes], failures=funnel.failures,
                     sessions_started=started, vouchers_redeemed=vouchers, funnel=funnel)


def csv_text(day: date, venue: str | None = None, with_site: bool = False) -> str:
    """The day's payments (of one venue, or all) as CSV (the dashboard's export format)."""
    f = reports.PaymentFilter(date_from=day, date_to=day, site=venue)
    out = io.StringIO()
    reports.write_payments_csv(f.query(), out, with_site=with_site)
    return out.getvalue()


def mail(report: DayReport, csv: str, to: list[str], cfg_report) -> None:
    """Send the report (text body, the day's payments attached as CSV) through ``[report]``'s SMTP."""
    msg = EmailMessage()
    msg["Subject"] = f"{report.site}: {formatting.money(report.revenue)} on {report.day:%d %b %Y}"
    msg["From"] = cfg_report.mail_from
    msg["To"] = ", ".join(to)
    msg.set_content(report.text())
    msg.add_attachment(csv.encode("utf-8"), maintype="text", subtype="csv",
                       filename=f"payments-{report.day.isoformat()}.csv")
    with smtplib.SMTP(cfg_report.smtp_host, cfg_report.smtp_port, timeout=20) as smtp:
        if cfg_report.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if cfg_report.smtp_user:
            smtp.login(cfg_report.smtp_user, cfg_report.smtp_password)
        smtp.send_message(msg)
