"""Every real envelope in ../shared/interop is accepted or refused with a reason a clerk can act on.

The expected outcome of each sample is written down here and in the README; a change in what we
accept shows up as a failing test, not as a silent drift.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.dsig import TrustStore, verify_tree
from bus.envelope import EnvelopeKind, read_envelope
from bus.errors import EnvelopeInvalidError, SignatureMissingError
from bus.pki import make_ca
from bus.xmlparse import parse_untrusted
from entrypoints.cli import main
from tests.conftest import INTEROP, TODAY

pytestmark = pytest.mark.interop

SAMPLES = sorted(INTEROP.glob("*/*.edxml")) if INTEROP.is_dir() else []
# name -> expected warning/problem codes; "OK" samples validate.
REFUSED = {"bkav_edoc_new.edxml": "date-format"}  # PromulgationDate 30/10/2020 is dd/MM/yyyy
WARNED = {
    "vpcp_sdk_edoc_new.edxml": ["organ-id-short"],  # To/OrganId 28.22.H17 is a short form
    "vpcp_axis_delivered_2019.edxml": ["too-long"],  # To/Website has 27 characters (indicative limit 20)
}


def _id(path: Path) -> str:
    return path.name


@pytest.fixture(scope="module", autouse=True)
def _samples_present() -> None:
    if not INTEROP.is_dir():
        pytest.skip(f"{INTEROP} is not on this machine (the shared interop samples are optional)")


@pytest.mark.parametrize("sample", SAMPLES, ids=_id)
def test_sample_is_accepted_or_refused_with_a_reason(sample: Path) -> None:
    data = sample.read_bytes()
    if sample.name in REFUSED:
        with pytest.raises(EnvelopeInvalidError) as caught:
            read_envelope(data, today=TODAY)
        [problem] = caught.value.problems
        assert problem.code == REFUSED[sample.name]
        assert problem.path.endswith("/PromulgationDate")
        assert problem.line
        assert "write 2020/10/30" in problem.message
        return
    parsed = read_envelope(data, today=TODAY)
    expected_kind = EnvelopeKind.STATUS if "status" in sample.name else EnvelopeKind.DOCUMENT
    assert parsed.kind is expected_kind
    assert [w.code for w in parsed.warnings] == WARNED.get(sample.name, [])


def test_all_eighteen_samples_are_covered() -> None:
    assert len(SAMPLES) == 18


@pytest.mark.parametrize("sample", [s for s in SAMPLES if "edoc" in s.name or "axis" in s.name], ids=_id)
def test_placeholder_signatures_are_reported_not_trusted(sample: Path) -> None:
    trust = TrustStore([make_ca("any").certificate])
    with pytest.raises(SignatureMissingError, match="edXML namespace, not xmldsig"):
        verify_tree(parse_untrusted(sample.read_bytes()), trust)


def test_cli_validate_over_all_samples(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["validate", *map(str, SAMPLES)])
    out, err = capsys.readouterr()
    assert status == 1  # one sample is refused
    assert out.count(": OK (") == len(SAMPLES) - 1
    assert "bkav_edoc_new.edxml: INVALID (1 problem(s))" in out
    where = "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/PromulgationInfo/PromulgationDate"
    assert f"bkav_edoc_new.edxml:33: {where}" in err
