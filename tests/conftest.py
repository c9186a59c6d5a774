"""Shared fixtures: our own example envelopes and keys generated per test session (none committed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings
from lxml import etree

from bus.pki import Issued, issue_certificate, make_ca

# No per-example deadline: CI shares two cores with services, and a slow first example is not a bug.
settings.register_profile("bus", deadline=None, max_examples=200)
settings.load_profile("bus")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
INTEROP = ROOT.parent / "shared" / "interop"
NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
# The example envelopes are dated 2026/11/20-21; checks run "as of" this day so they never expire.
TODAY = dt.date(2026, 11, 23)


@pytest.fixture
def document_bytes() -> bytes:
    return (EXAMPLES / "cong-van-tinh-gui-huyen-xa.edxml").read_bytes()


@pytest.fixture
def status_bytes() -> bytes:
    return (EXAMPLES / "trang-thai-03-huyen-gui-tinh.edxml").read_bytes()


def edit(data: bytes, change: Callable[[etree._Element], None]) -> bytes:
    """Apply *change* to the parsed envelope and serialise it again."""
    root = etree.fromstring(data)
    change(root)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def q(path: str) -> str:
    """``"edXMLEnvelope/edXMLHeader"`` -> the same path with the edXML namespace on every step."""
    return "/".join(f"{{{NS}}}{step}" if step not in (".", "..") else step for step in path.split("/"))


class Pki:
    """A CA, an intermediate, and signers with RSA-2048 and ECDSA P-256 keys."""

    def __init__(self) -> None:
        self.ca = make_ca("Test CA", kind="ec")
        self.other_ca = make_ca("Untrusted CA", kind="ec")
        self.rsa = issue_certificate(self.ca, "UBND tỉnh Mẫu", "000.00.00.H99", kind="rsa")
        self.ec = issue_certificate(self.ca, "UBND tỉnh Mẫu", "000.00.00.H99", kind="ec")
        self.intermediate = issue_certificate(self.ca, "Test Intermediate", "000.00.90.H99", is_ca=True)
        self.via_intermediate = issue_certificate(self.intermediate, "Sở Tài chính", "000.00.02.H99")
        self.untrusted = issue_certificate(self.other_ca, "Kẻ giả mạo", "000.00.00.H99")
        self.expired = issue_certificate(
            self.ca, "Hết hạn", "000.00.00.H99", not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC), days=30
        )

    def signer(self, kind: str) -> Issued:
        return {"rsa": self.rsa, "ec": self.ec}[kind]


@pytest.fixture(scope="session")
def pki() -> Pki:
    return Pki()
