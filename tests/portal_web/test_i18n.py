"""The gettext catalogue: every customer text has its Kiswahili, the compiled .mo is the .po's,
and the core's codes all have words."""
import io
import re

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

from hotspotd.daraja import codes
from portal_web import i18n
from tests.helpers import REPO

#: run again on PostgreSQL by scripts/test (-m postgres)
pytestmark = pytest.mark.postgres

ROOT = REPO
PO = i18n.TRANSLATIONS / "sw" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")
KEYWORDS = {"_": None, "gettext": None, "N_": None, "t": None}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def extracted() -> set[str]:
    """Every message id in the sources, found as pybabel finds them (babel.cfg)."""
    method_map, options_map = parse_mapping_cfg(io.StringIO((ROOT / "babel.cfg").read_text()))
    found = set()
    for _, _, message, _, _ in extract_from_dir(str(ROOT), method_map, options_map, keywords=KEYWORDS):
        found.add(message if isinstance(message, str) else message[0])
    return found


def untranslated(catalog, ids) -> list[str]:
    """The ids that lack a non-empty, non-fuzzy translation with the same placeholders."""
    bad = []
    for msgid in sorted(ids):
        message = catalog.get(msgid)
        if message is None or not message.string or message.fuzzy or \
                set(PLACEHOLDER.findall(msgid)) != set(PLACEHOLDER.findall(message.string)):
            bad.append(msgid)
    return bad


def test_every_customer_text_has_its_kiswahili():
    ids = extracted()
    assert len(ids) > 70 and "Pay with M-Pesa" in ids and "You cancelled the M-Pesa prompt." in ids
    with PO.open("rb") as f:
        catalog = read_po(f)
    assert untranslated(catalog, ids) == []


def test_the_check_fails_without_a_translation_or_with_other_placeholders():
    with PO.open("rb") as f:
        catalog = read_po(f)
    catalog["Pay with M-Pesa"].string = ""
    catalog["up to %(rate)s"].string = "hadi"
    catalog["Try again"].flags.add("fuzzy")
    catalog.delete("Time left")
    assert untranslated(catalog, extracted()) == ["Pay with M-Pesa", "Time left", "Try again", "up to %(rate)s"]


def test_the_template_and_the_catalogue_hold_the_sources_messages():
    ids = extracted()
    with (i18n.TRANSLATIONS / "messages.pot").open("rb") as f:
        assert {m.id for m in read_po(f) if m.id} == ids, "run pybabel extract and update (portal_web/i18n.py)"
    with PO.open("rb") as f:
        assert {m.id for m in read_po(f) if m.id} == ids, "run pybabel update (portal_web/i18n.py)"


def test_the_committed_mo_is_the_po_compiled():
    with PO.open("rb") as f:
        catalog = read_po(f)
    fresh = io.BytesIO()
    write_mo(fresh, catalog)
    with MO.open("rb") as f:
        committed = read_mo(f)
    fresh.seek(0)
    compiled = read_mo(fresh)
    assert {m.id: m.string for m in committed if m.id} == {m.id: m.string for m in compiled if m.id}, \
        "run pybabel compile -d portal_web/translations"


def test_translation_reads_the_catalogue_and_fills_placeholders():
    assert i18n.t("Pay with M-Pesa", "sw") == "Lipa kwa M-Pesa" and i18n.t("Pay with M-Pesa", "en") == "Pay with M-Pesa"
    assert i18n.t("up to %(rate)s", "sw", rate="Mbps 5") == "hadi Mbps 5"
    assert i18n.t("until %(time)s", "fr", time="10:00") == "until 10:00"


def test_every_code_of_the_core_has_words():
    for reason in set(codes.REASONS.values()) | {"failed", "push_failed"}:
        assert reason in i18n.PAYMENT_RESULTS, reason
    for reason in ("unavailable", "misconfigured", "rejected", "phone", "amount", "locked"):
        assert f"mpesa_{reason}" in i18n.REFUSALS
    source = "\n".join(p.read_text() for p in (ROOT / "hotspotd").rglob("*.py"))
    raised = set(re.findall(r'(?:AccessError|VoucherError|InvalidPhone)\("(\w+)"', source))
    raised |= set(re.findall(r'^(?:CANNOT_RECORD|STORAGE_BUSY|UNKNOWN_SITE|BAD_MAC|CHOOSE_PACKAGE|NOT_ON_OFFER|'
                             r'AMOUNT_OUT_OF_RANGE) = "(\w+)"', source, re.M))
    owner_only = {"extend_out_of_range", "not_live", "batch_size", "no_such_package"}
    assert len(raised) > 20 and raised - owner_only <= set(i18n.REFUSALS)


@pytest.mark.parametrize("msgid, wrong, right", [
    ("Phone number you paid with", "uliyolipia", "uliyotumia kulipa"),
    ("The M-Pesa prompt expired. Please try again.", "limepitwa na muda", "Muda wa ombi la M-Pesa umekwisha"),
    ("No prompt? When this one ends you can send it again.", "Ombi", "Hujapata ujumbe?"),
    ("No response from your phone. Keep it on and unlocked, then try again.", "imewashwa,", "imewashwa na haijafungwa"),
])
def test_kiswahili_reads_as_kiswahili(msgid, wrong, right):
    text = i18n.t(msgid, "sw")
    assert wrong not in text and right in text


def test_no_kiswahili_says_what_reads_as_a_translation():
    with PO.open("rb") as f:
        texts = " ".join(m.string for m in read_po(f) if m.id)
    for phrase in ("uliyolipia", "litakuomba", "Ombi litakaa", "limepitwa na muda", "ulifungwa ukilipa"):
        assert phrase not in texts, phrase
    steps = i18n.t("The M-Pesa prompt asks you to pay %(amount)s to %(name)s (paybill %(number)s, account %(account)s).",
                   "sw", amount="KES 20", name="CAFE LTD", number="174379", account="WIFI")
    assert "Utapokea ujumbe wa M-Pesa unaokuomba ulipe KES 20 kwa CAFE LTD (paybill 174379, akaunti WIFI)" in steps
    assert "ulipokuwa ukilipa" in texts


# --- the boundaries over real HTTP ----------------------------------------------------------
CTX = {"mac": "AA:BB:CC:DD:EE:75", "ip": "10.5.50.75", "link-login-only": "http://10.5.50.1/login"}


def test_one_table_gives_an_unknown_venue_the_same_status_on_every_route(hotspot, http):
    api = f"{hotspot.portal_url}/api/portal"
    answers = [http.get(f"{api}/packages", params={"site": "atlantis"}),
               http.post(f"{api}/pay", params={"site": "atlantis"},
                         json={"phone": "0708374149", "packageId": 1, "macAddress": CTX["mac"]}),
               http.post(f"{api}/receipt", params={"site": "atlantis"},
                         json={"receipt": "SKL2ABC3DE", "phone": "0708374149", "macAddress": CTX["mac"]}),
               http.post(f"{api}/voucher", params={"site": "atlantis"}, json={"code": "ABCDE-23456", "macAddress": CTX["mac"]})]
    for r in answers:
        assert r.status_code == 404 and "unknown venue" in r.json()["message"], (r.url, r.status_code)


def test_the_api_answers_in_kiswahili_when_asked(hotspot, http):
    api = f"{hotspot.portal_url}/api/portal"
    r = http.post(f"{api}/pay", params={"lang": "sw"}, json={"phone": "0712", "packageId": 1, "macAddress": CTX["mac"]})
    assert r.status_code == 400 and r.json()["field"] == "phone" and "Safaricom" in r.json()["message"]
    assert r.json()["message"] == i18n.t(i18n.REFUSALS["phone_not_kenyan"], "sw") != i18n.REFUSALS["phone_not_kenyan"]
    r = http.post(f"{api}/voucher", headers={"Accept-Language": "sw"}, json={"code": "nope", "macAddress": CTX["mac"]})
    assert r.status_code == 404 and r.json()["message"] == "Huo si msimbo wa vocha. Unafanana na ABCDE-23456."
    r = http.get(f"{api}/status/ws_CO_none", params={"lang": "sw"})
    assert r.status_code == 404 and r.json()["message"] == "Hakuna malipo yenye kitambulisho hicho."


def test_the_splash_page_says_each_phone_refusal_in_kiswahili(hotspot, http):
    url = f"{hotspot.portal_url}/pay"
    for phone, code in (("0712", "phone_not_kenyan"), ("07123abc", "phone_not_digits"), ("", "phone_missing")):
        r = http.post(url, params={"lang": "sw", **CTX}, data={"phone": phone, "package": "2"})
        assert r.status_code == 400 and i18n.t(i18n.REFUSALS[code], "sw") in r.text, phone
    page = http.get(f"{hotspot.portal_url}/paid", params={"lang": "sw", **CTX}).text
    assert "Nambari ya simu uliyotumia kulipa" in page and "ulipokuwa ukilipa" in page
