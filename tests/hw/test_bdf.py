import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccgpu.hw.pci import BDF, BDFError


def test_parse_full_and_short_forms():
    assert str(BDF.parse("0000:3A:00.0")) == "0000:3a:00.0"
    assert BDF.parse("3a:00.1") == BDF(0, 0x3A, 0, 1)
    assert BDF.parse("10000:01:00.0").domain == 0x10000


@pytest.mark.parametrize(
    "bad",
    ["", "0000:3a:00", "0000:3a:00.8", "0000:3a:20.0", "0000:3g:00.0", "000:3a:00.0", "0000:3a:00.0\n",
     "../../etc", "0000:3a:00.0/../x", " 0000:3a:00.0", "0000:3a:00.0 "],
)
def test_malformed_addresses_are_rejected_with_the_accepted_form(bad):
    with pytest.raises(BDFError, match="domain:bus:device.function"):
        BDF.parse(bad)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 0x1F), st.integers(0, 7))
def test_roundtrip_of_every_valid_address(domain, bus, dev, fn):
    b = BDF(domain, bus, dev, fn)
    assert BDF.parse(str(b)) == b
    assert BDF.parse(str(b).upper()) == b


@given(st.text(max_size=20))
def test_arbitrary_text_either_parses_to_a_canonical_address_or_raises(text):
    try:
        b = BDF.parse(text)
    except BDFError:
        return
    assert "/" not in str(b) and ".." not in str(b)
    assert BDF.parse(str(b)) == b
