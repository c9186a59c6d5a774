"""Our signatures against the reference XML-DSig implementation, the xmlsec1 command line tool.

Both directions: ``bus sign`` output verifies with ``xmlsec1 --verify``, and a template signed by
``xmlsec1 --sign`` with a key from our trust store verifies with ``bus verify``. A tampered copy
must fail in xmlsec1 too, so these tests can fail.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree

from bus.dsig import ensure_trace_list, signature_template
from bus.dsig.keys import signature_method_for
from bus.pki import Issued
from bus.trace import append_trace
from bus.xmlparse import parse_untrusted
from entrypoints.cli import main
from tests.conftest import Pki, q

XMLSEC1 = shutil.which("xmlsec1")
# scripts/setup.sh installs xmlsec1; without it these tests would prove nothing, so they fail loudly.
pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def xmlsec1() -> str:
    assert XMLSEC1 is not None, "xmlsec1 is not installed: run scripts/setup.sh"
    return XMLSEC1


def _write_pem(folder: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    key = folder / f"{name}.key"
    cert = folder / f"{name}.pem"
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _ca(folder: Path, pki: Pki) -> Path:
    path = folder / "ca.pem"
    path.write_bytes(pki.ca.certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _xmlsec_verify(xmlsec1: str, ca: Path, document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [xmlsec1, "--verify", "--trusted-pem", str(ca), str(document)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_bus_signature_verifies_with_xmlsec1(
    tmp_path: Path, pki: Pki, document_bytes: bytes, xmlsec1: str, kind: str
) -> None:
    key, cert = _write_pem(tmp_path, kind, pki.signer(kind))
    source = tmp_path / "in.edxml"
    source.write_bytes(document_bytes)
    signed = tmp_path / "signed.edxml"
    assert main(["sign", "--key", str(key), "--cert", str(cert), str(source), "-o", str(signed)]) == 0
    ca = _ca(tmp_path, pki)
    result = _xmlsec_verify(xmlsec1, ca, signed)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout + result.stderr

    # Three hops later xmlsec1 still agrees: the filter transform is standard XML-DSig.
    tree = parse_untrusted(signed.read_bytes())
    for hop in ("000.00.90.H99", "000.00.00.G22", "000.00.90.H98"):
        append_trace(tree, hop)
    hopped = tmp_path / "hopped.edxml"
    hopped.write_bytes(etree.tostring(tree, encoding="UTF-8", xml_declaration=True))
    result = _xmlsec_verify(xmlsec1, ca, hopped)
    assert result.returncode == 0, result.stderr

    tampered = tmp_path / "tampered.edxml"
    tampered.write_text(hopped.read_text(encoding="utf-8").replace("Xuân Phước<", "Xuân Phước giả<"), "utf-8")
    assert tampered.read_bytes() != hopped.read_bytes()
    assert _xmlsec_verify(xmlsec1, ca, tampered).returncode != 0


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_xmlsec1_signature_verifies_with_bus_verify(
    tmp_path: Path,
    pki: Pki,
    document_bytes: bytes,
    xmlsec1: str,
    kind: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    issued = pki.signer(kind)
    key, cert = _write_pem(tmp_path, kind, issued)
    tree = parse_untrusted(document_bytes)
    ensure_trace_list(tree.getroot())
    header = tree.find(q("edXMLEnvelope/edXMLHeader"))
    assert header is not None
    header.append(signature_template(signature_method_for(issued.key)))
    template = tmp_path / "template.edxml"
    template.write_bytes(etree.tostring(tree, encoding="UTF-8", xml_declaration=True))
    signed = tmp_path / "by-xmlsec1.edxml"
    result = subprocess.run(
        [xmlsec1, "--sign", "--privkey-pem", f"{key},{cert}", "--output", str(signed), str(template)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ca = _ca(tmp_path, pki)
    capsys.readouterr()
    assert main(["verify", "--ca", str(ca), str(signed)]) == 0
    out = capsys.readouterr().out
    assert "OK (1 signature(s)" in out
    assert "UBND tỉnh Mẫu" in out

    # After a hop, still valid for us; and a tampered copy is refused with exit status 1.
    hopped = parse_untrusted(signed.read_bytes())
    append_trace(hopped, "000.00.90.H99")
    signed.write_bytes(etree.tostring(hopped, encoding="UTF-8", xml_declaration=True))
    assert main(["verify", "--ca", str(ca), str(signed)]) == 0
    tampered = tmp_path / "tampered.edxml"
    tampered.write_text(
        signed.read_text(encoding="utf-8").replace("1234/UBND-KGVX<", "1235/UBND-KGVX<"), "utf-8"
    )
    assert main(["verify", "--ca", str(ca), str(tampered)]) == 1
    assert "DigestValue does not match" in capsys.readouterr().err
