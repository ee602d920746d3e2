"""/metrics after a simulated day: payments, callbacks, RADIUS, cuts, Daraja errors; who may read it."""
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pyrad import packet

from hotspotd import clock
from hotspotd.daraja.client import DarajaAuthError, DarajaUnavailable
from hotspotd.metrics import MAX_ERROR_CODES, Metrics
from hotspotd.storage.models import Entitlement, Payment

from tests.helpers import acct, client, give_time, mac_request, RADIUS, RADIUS_MAC as MAC, send, wait_for

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres


def scrape(http, hs) -> dict:
    r = http.get(f"{hs.portal_url}/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def pay(http, hs, phone: str, mac: str, package: int = 1):
    return http.post(f"{hs.portal_url}/api/portal/pay", json={"phone": phone, "packageId": package, "macAddress": mac})


def wait_status(http, hs, checkout: str, status: str) -> None:
    wait_for(lambda: http.get(f"{hs.portal_url}/api/portal/status/{checkout}").json()["status"] == status)


def test_metrics_show_a_simulated_day(make_hotspot, http):
    hs = make_hotspot(radius=RADIUS, scheduler={"enabled": False})
    before = scrape(http, hs)
    assert value(before, "hotspotd_devices_online") == 0
    assert value(before, "hotspotd_payments_total", outcome="success", result_code="0") == 0

    # Daraja down for one push: an error payment, counted by HTTP status
    hs.simulator.fail_next(1, 503)
    assert pay(http, hs, "0708374149", "AA:BB:CC:DD:EE:30").status_code == 502
    # paid, and cancelled
    paid = pay(http, hs, "0708374149", MAC).json()["checkoutRequestId"]
    cancelled = pay(http, hs, "254700001032", "AA:BB:CC:DD:EE:31").json()["checkoutRequestId"]
    wait_status(http, hs, paid, "success")
    wait_status(http, hs, cancelled, "cancelled")

    # the paid device comes online: Access-Accept, then accounting Start
    ent = Entitlement.get(Entitlement.payment == Payment.get(Payment.checkout_request_id == paid).id)
    c = client(hs)
    assert send(c, mac_request(c)).code == packet.AccessAccept
    c = client(hs)
    assert send(c, mac_request(c, user="AA:BB:CC:DD:EE:32", calling="AA:BB:CC:DD:EE:32")).code == packet.AccessReject
    c = client(hs)
    assert send(c, acct(c, "Start", ent=ent)).code == packet.AccountingResponse

    # one device's time ends and is cut at the (simulated) router; another's while the router is down
    for mac in ("AA:BB:CC:DD:EE:33", "AA:BB:CC:DD:EE:34"):
        other = give_time(mac)
        Entitlement.update(expires_at=clock.now() - 1).where(Entitlement.id == other.id).execute()
        if mac.endswith("34"):
            hs.routeros_sim.set_unreachable(True)
        hs.expire_sessions()
    hs.routeros_sim.set_unreachable(False)

    def settled():
        # the last figures are taken just after the answers went out (callback answered, RADIUS reply sent)
        m = scrape(http, hs)
        done = (value(m, "hotspotd_callbacks_total", state="applied") == 2
                and value(m, "hotspotd_radius_request_seconds_count", type="acct") == 1)
        return m if done else None

    m = wait_for(settled)
    assert value(m, "hotspotd_payments_total", outcome="success", result_code="0") == 1
    assert value(m, "hotspotd_payments_total", outcome="cancelled", result_code="1032") == 1
    assert value(m, "hotspotd_payments_total", outcome="error", result_code="none") == 1
    assert value(m, "hotspotd_callbacks_total", state="applied") == 2
    assert value(m, "hotspotd_payment_callback_delay_seconds_count") == 2
    assert value(m, "hotspotd_payment_prompt_to_paid_seconds_count") == 1
    assert value(m, "hotspotd_payment_paid_to_online_seconds_count") == 1    # Accept, not again at Start
    assert value(m, "hotspotd_payment_paid_to_online_seconds_bucket", le="+Inf") == 1
    assert value(m, "hotspotd_devices_online") == 1
    assert value(m, "hotspotd_sessions_active") == 1
    assert value(m, "hotspotd_radius_requests_total", type="auth", outcome="accept") == 1
    assert value(m, "hotspotd_radius_requests_total", type="auth", outcome="reject") == 1
    assert value(m, "hotspotd_radius_requests_total", type="acct", outcome="start") == 1
    assert value(m, "hotspotd_radius_request_seconds_count", type="auth") == 2
    assert value(m, "hotspotd_radius_request_seconds_count", type="acct") == 1
    assert 0 < value(m, "hotspotd_radius_request_seconds_sum", type="auth") < 2
    router = hs.routers[0].name
    assert value(m, "hotspotd_disconnect_attempts_total", router=router, outcome="done") == 1
    assert value(m, "hotspotd_disconnect_attempts_total", router=router, outcome="router_down") == 1
    assert value(m, "hotspotd_daraja_errors_total", operation="stk_push", code="503") == 1
    assert value(m, "process_cpu_seconds_total") > 0


def test_metrics_only_for_allowed_addresses(make_hotspot, http):
    hs = make_hotspot(metrics={"allow": ["10.0.0.0/8"]}, scheduler={"enabled": False})
    r = http.get(f"{hs.portal_url}/metrics")
    assert r.status_code == 403
    assert "hotspotd_" not in r.text


@pytest.mark.parametrize("mark", ["X-Real-IP", "Via", "X-Forwarded-Server"])
def test_metrics_refused_through_a_reverse_proxy_on_the_box(make_hotspot, http, mark):
    hs = make_hotspot(scheduler={"enabled": False})
    assert http.get(f"{hs.portal_url}/metrics").status_code == 200
    assert http.get(f"{hs.portal_url}/metrics", headers={mark: "203.0.113.9"}).status_code == 403


def test_metrics_can_be_switched_off(make_hotspot, http):
    hs = make_hotspot(metrics={"enabled": False}, scheduler={"enabled": False})
    assert hs.metrics is None
    assert http.get(f"{hs.portal_url}/metrics").status_code == 404


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "localhost"])
def test_allow_entries_must_be_networks(tmp_path, entry):
    from hotspotd.config import ConfigError, from_dict
    with pytest.raises(ConfigError) as info:
        from_dict({"metrics": {"allow": [entry]}}, "site.toml")
    assert (info.value.table, info.value.key) == ("metrics", "allow")


def test_each_hotspot_has_its_own_registry_and_labels_stay_few():
    a, b = Metrics(process=False), Metrics(process=False)   # two daemons in one process: no clash
    assert a.registry is not b.registry and isinstance(a.registry, CollectorRegistry)
    a.payment_final("failed", "SOMETHING-NEW")
    a.payment_final("failed", 2001)
    assert a.registry.get_sample_value("hotspotd_payments_total", {"outcome": "failed", "result_code": "other"}) == 1
    assert a.registry.get_sample_value("hotspotd_payments_total", {"outcome": "failed", "result_code": "2001"}) == 1
    assert b.registry.get_sample_value("hotspotd_payments_total", {"outcome": "failed", "result_code": "2001"}) is None
    a.daraja_error("stk_push", DarajaAuthError("refused", code="400.008.01", http_status=400))
    a.daraja_error("stk_query", DarajaUnavailable("no answer within 10 s"))
    a.daraja_error("stk_query", DarajaUnavailable("odd", code="<script>", http_status=500))
    for n in range(MAX_ERROR_CODES + 5):
        a.daraja_error("stk_push", DarajaUnavailable("x", http_status=600 + n))
    codes = {labels["code"] for _, labels in _samples(a, "hotspotd_daraja_errors_total")}
    assert {"400.008.01", "no_answer", "other"} <= codes and len(codes) <= MAX_ERROR_CODES + 2
    assert a.registry.get_sample_value("hotspotd_daraja_errors_total", {"operation": "oauth", "code": "400.008.01"}) == 1


def test_paid_to_online_is_observed_once_per_payment():
    m = Metrics(process=False)
    m.online(7)                                   # not a paid session waiting: nothing
    m.payment_final("success", "0", prompt_seconds=12.5, entitlement_id=7)
    m.online(7)
    m.online(7)
    assert m.registry.get_sample_value("hotspotd_payment_paid_to_online_seconds_count") == 1
    assert m.registry.get_sample_value("hotspotd_payment_prompt_to_paid_seconds_sum") == 12.5


def _samples(m: Metrics, name: str):
    for family in m.registry.collect():
        for s in family.samples:
            if s.name == name:
                yield s.value, s.labels


def test_radius_latency_buckets_are_cumulative_and_inclusive():
    from hotspotd.metrics import Metrics
    m = Metrics(process=False)
    for seconds in (0.0004, 0.0005, 0.002, 3.0):
        m.radius_request("auth", seconds)
    m.radius_request("other", 1.0)          # not a RADIUS type: not counted
    text = __import__("prometheus_client").generate_latest(m.registry).decode()
    assert 'hotspotd_radius_request_seconds_bucket{le="0.0005",type="auth"} 2.0' in text
    assert 'hotspotd_radius_request_seconds_bucket{le="0.0025",type="auth"} 3.0' in text
    assert 'hotspotd_radius_request_seconds_bucket{le="+Inf",type="auth"} 4.0' in text
    assert 'hotspotd_radius_request_seconds_count{type="auth"} 4.0' in text
    assert 'hotspotd_radius_request_seconds_count{type="acct"} 0.0' in text
