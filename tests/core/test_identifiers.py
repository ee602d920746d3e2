import pytest
from hypothesis import given, strategies as st

from hotspotd.identifiers import InvalidMac, InvalidPhone, is_random_mac, mask_phone, normalize_mac, normalize_phone

SAFARICOM_PREFIXES = ["70", "71", "72", "740", "741", "742", "743", "745", "746", "748", "757", "758", "759",
                      "768", "769", "79", "110", "111", "112", "113", "114", "115"]


@pytest.mark.parametrize("text", ["0708374149", "708374149", "+254708374149", "254708374149", "0708 374 149",
                                  "+254 708-374-149", "(0708) 374149"])
def test_common_forms_of_one_number(text):
    assert normalize_phone(text) == "254708374149"


@pytest.mark.parametrize("text, expected", [("0112345678", "254112345678"), ("+254110123456", "254110123456")])
def test_01_numbers(text, expected):
    assert normalize_phone(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "0733123456", "0100123456", "07083741", "07083741499", "+255712345678",
                                  "0208374149", "254708374149000", "+"])
def test_refused(text):
    with pytest.raises(InvalidPhone) as info:
        normalize_phone(text)
    assert str(info.value)


@st.composite
def safaricom_numbers(draw):
    prefix = draw(st.sampled_from(SAFARICOM_PREFIXES))
    rest = draw(st.text("0123456789", min_size=9 - len(prefix), max_size=9 - len(prefix)))
    return prefix + rest


@given(safaricom_numbers(), st.sampled_from(["0{}", "+254{}", "254{}", "{}", "+254 {}"]))
def test_property_every_form_normalises_to_12_digits(national, form):
    out = normalize_phone(form.format(national))
    assert out == "254" + national
    assert len(out) == 12 and out[3] in "17"


@given(st.text(max_size=30))
def test_property_phone_parser_never_crashes(text):
    try:
        out = normalize_phone(text)
    except InvalidPhone:
        return
    assert out.isdigit() and len(out) == 12 and out.startswith(("2547", "2541"))


def test_mask_phone():
    assert mask_phone("254708374149") == "2547****4149"
    assert mask_phone(None) == "-"


@given(st.binary(min_size=6, max_size=6), st.sampled_from(["{}:{}:{}:{}:{}:{}", "{}-{}-{}-{}-{}-{}", "{}{}{}{}{}{}"]),
       st.booleans())
def test_property_mac_notations(raw, fmt, lower):
    groups = [f"{b:02X}" for b in raw]
    text = fmt.format(*groups)
    text = text.lower() if lower else text
    assert normalize_mac(text) == ":".join(groups)


def test_mac_cisco_and_short_groups():
    assert normalize_mac("aabb.ccdd.eeff") == "AA:BB:CC:DD:EE:FF"
    assert normalize_mac("a:b:c:d:e:f") == "0A:0B:0C:0D:0E:0F"


@given(st.text(max_size=40))
def test_property_mac_parser_never_crashes(text):
    try:
        out = normalize_mac(text)
    except InvalidMac:
        return
    assert len(out) == 17 and out == out.upper()


@pytest.mark.parametrize("text", ["", "AA:BB:CC:DD:EE", "AA:BB-CC:DD:EE:FF", "GG:BB:CC:DD:EE:FF", "AABBCCDDEEFF00"])
def test_bad_macs(text):
    with pytest.raises(InvalidMac):
        normalize_mac(text)


def test_random_mac_detection():
    assert is_random_mac("DA:A1:19:00:00:01")   # locally administered bit set
    assert not is_random_mac("00:1A:2B:3C:4D:5E")


@given(st.integers(min_value=100_000_000, max_value=799_999_999))
def test_kenyan_carrier_table_answers_as_libphonenumber_does(national):
    """identifiers keeps only Kenya's slice of libphonenumber's carrier table (memory): for every
    Kenyan mobile number it must name the same carrier as the library's full table."""
    import phonenumbers
    from phonenumbers import carrier

    from hotspotd.identifiers import carrier_of
    number = phonenumbers.parse(f"+254{national}")
    if phonenumbers.number_type(number) in (phonenumbers.PhoneNumberType.MOBILE,
                                            phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
        assert carrier_of(number) == carrier.name_for_number(number, "en")


def test_mac_already_in_stored_form_comes_back_unchanged_and_others_are_normalised():
    assert normalize_mac("AA:BB:CC:DD:EE:FF") == "AA:BB:CC:DD:EE:FF"
    assert normalize_mac("aa:bb:cc:dd:ee:ff") == "AA:BB:CC:DD:EE:FF"
    assert normalize_mac(" AA:BB:CC:DD:EE:FF\n") == "AA:BB:CC:DD:EE:FF"
