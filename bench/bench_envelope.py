"""Per-envelope cost of parse, validate, sign and verify, beside xmlschema and signxml (one run).

Not a test: run ``.venv/bin/python -m bench.bench_envelope`` and copy the table into
docs/performance.md. Sizes: an ~8 KB envelope and an ~1 MB one (the bulk is a base64 attachment, as in
real traffic). Each figure is the median of several timed rounds, in milliseconds per envelope.
``--smoke``: one round of two envelopes (tests/integration/test_bench_smoke.py: it must keep running).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import signxml
import xmlschema
from cryptography.hazmat.primitives import serialization
from lxml import etree

from bus.dsig import TrustStore, sign_tree, verify_tree
from bus.envelope import check_tree
from bus.pki import issue_certificate, make_ca
from bus.schema import SCHEMA_FILES, schema_dir, schema_problems
from bus.xmlparse import parse_untrusted

ROOT = Path(__file__).resolve().parents[1]
NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
TODAY = dt.date(2026, 11, 23)


def envelope_of_size(target: int) -> bytes:
    """The example document with its attachment padded so the whole envelope is about *target* bytes."""
    root = etree.fromstring((ROOT / "examples" / "cong-van-tinh-gui-huyen-xa.edxml").read_bytes())
    data = root.find(f"{{{NS}}}AttachmentEncoded/{{{NS}}}Attachment/{{{NS}}}ContentTransferEncoded")
    assert data is not None
    base = len(etree.tostring(root)) - len(data.text or "")
    raw = os.urandom(max(0, (target - base) * 3 // 4))
    data.text = base64.b64encode(raw).decode()
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def timed(label: str, action: Callable[[], object], rounds: int, per_round: int) -> tuple[str, float]:
    action()  # warm-up (schema compilation, caches)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_round):
            action()
        samples.append((time.perf_counter() - started) / per_round * 1000)
    return label, statistics.median(samples)


def run(size_name: str, data: bytes, per_round: int, rounds: int) -> list[tuple[str, float]]:
    ca = make_ca("Bench CA", kind="ec")
    signer = issue_certificate(ca, "UBND tỉnh Mẫu", "000.00.00.H99", kind="ec")
    trust = TrustStore([ca.certificate])
    signed = parse_untrusted(data)
    sign_tree(signed, signer.key, signer.certificate)
    signed_bytes = etree.tostring(signed, encoding="UTF-8", xml_declaration=True)

    key_pem = signer.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_pem = signer.certificate.public_bytes(serialization.Encoding.PEM)
    xs = xmlschema.XMLSchema10(str(schema_dir() / SCHEMA_FILES["document"]))
    sx_signer = signxml.XMLSigner(
        method=signxml.methods.enveloped,
        signature_algorithm=signxml.SignatureMethod.ECDSA_SHA256,
        digest_algorithm=signxml.DigestAlgorithm.SHA256,
    )
    sx_signed = etree.tostring(sx_signer.sign(parse_untrusted(data).getroot(), key=key_pem, cert=cert_pem))

    def ours_sign() -> None:
        sign_tree(parse_untrusted(data), signer.key, signer.certificate)

    results = [
        timed("parse (bus.xmlparse)", lambda: parse_untrusted(data), rounds, per_round),
        timed(
            "validate: parse + schema + business checks (bus)",
            lambda: check_tree(parse_untrusted(data), today=TODAY),
            rounds,
            per_round,
        ),
        timed(
            "validate: parse + schema only (bus, libxml2)",
            lambda: schema_problems(parse_untrusted(data), "document"),
            rounds,
            per_round,
        ),
        timed(
            "validate: parse + schema only (xmlschema package)",
            lambda: xs.is_valid(parse_untrusted(data)),
            rounds,
            max(1, per_round // 10),
        ),
        timed("sign: parse + sign (bus.dsig)", ours_sign, rounds, per_round),
        timed(
            "sign: parse + sign (signxml, enveloped)",
            lambda: sx_signer.sign(parse_untrusted(data).getroot(), key=key_pem, cert=cert_pem),
            rounds,
            per_round,
        ),
        timed(
            "verify: parse + verify + chain (bus.dsig)",
            lambda: verify_tree(parse_untrusted(signed_bytes), trust),
            rounds,
            per_round,
        ),
        timed(
            "verify: parse + verify, pinned cert (signxml)",
            lambda: signxml.XMLVerifier().verify(parse_untrusted(sx_signed).getroot(), x509_cert=cert_pem),
            rounds,
            per_round,
        ),
    ]
    hot = (
        "validate: parse + schema + business",
        "sign: parse + sign (bus",
        "verify: parse + verify + chain (bus",
    )
    total = sum(ms for label, ms in results if label.startswith(hot))
    results.append(("whole hot path: validate + verify + sign (bus)", total))
    print(f"\n### {size_name} envelope ({len(data):,} bytes)\n")
    print("| operation | ms per envelope | envelopes/s |")
    print("|---|---:|---:|")
    for label, ms in results:
        print(f"| {label} | {ms:.3f} | {1000 / ms:,.0f} |")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--smoke", action="store_true", help="one round of two envelopes: it runs")
    args = parser.parse_args()
    rounds, small, large = (1, 2, 1) if args.smoke else (3, 20, 2) if args.quick else (7, 100, 10)
    print(
        f"Python {platform.python_version()}, lxml {'.'.join(map(str, etree.LXML_VERSION))}, "
        f"libxml2 {'.'.join(map(str, etree.LIBXML_VERSION))}, xmlschema {xmlschema.__version__}, "
        f"signxml {metadata.version('signxml')}, cryptography {metadata.version('cryptography')}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}"
    )
    run("8 KB", envelope_of_size(8 * 1024), per_round=small, rounds=rounds)
    run("1 MB", envelope_of_size(1024 * 1024), per_round=large, rounds=rounds)


if __name__ == "__main__":
    main()
