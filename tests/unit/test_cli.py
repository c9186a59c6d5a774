"""The CLI contract: exit 0 success, 1 bad input, 2 usage; one stdout line per file; problems on stderr."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from entrypoints.cli import main
from tests.conftest import ROOT, Pki

Capture = pytest.CaptureFixture[str]


def _files(tmp_path: Path, **contents: bytes) -> list[str]:
    paths = []
    for name, data in contents.items():
        path = tmp_path / f"{name}.edxml"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def test_validate_ok_and_bad_files(tmp_path: Path, document_bytes: bytes, capsys: Capture) -> None:
    good, bad = _files(
        tmp_path, good=document_bytes, bad=document_bytes.replace(b"<edXML:Subject>", b"<edXML:Subjec>", 1)
    )
    assert main(["validate", good, bad]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == f"{good}: OK (document)"
    assert out.splitlines()[1].startswith(f"{bad}: INVALID")
    assert f"{bad}:1:" in err or f"{bad}:" in err


def test_validate_reports_path_and_line_on_stderr(
    tmp_path: Path, document_bytes: bytes, capsys: Capture
) -> None:
    [path] = _files(tmp_path, doc=document_bytes.replace(b"<edXML:Priority>1<", b"<edXML:Priority>9<"))
    assert main(["validate", path]) == 1
    err = capsys.readouterr().err
    line = document_bytes.decode().splitlines().index("          <edXML:Priority>1</edXML:Priority>") + 1
    assert (
        f"{path}:{line}: /edXML/edXMLEnvelope/edXMLHeader/MessageHeader/OtherInfo/Priority: Priority '9'"
        in err
    )


def test_validate_hostile_xml_is_bad_input(tmp_path: Path, capsys: Capture) -> None:
    [path] = _files(tmp_path, bomb=b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    assert main(["validate", path]) == 1
    assert "DOCTYPE is refused" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path: Path, capsys: Capture) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["validate"])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
    assert main(["verify", "--ca", str(tmp_path / "missing.pem"), str(tmp_path / "x.edxml")]) == 2
    assert "cannot read CA certificates" in capsys.readouterr().err


def test_sign_refuses_an_invalid_envelope(
    tmp_path: Path, pki: Pki, document_bytes: bytes, capsys: Capture
) -> None:
    key = tmp_path / "k.pem"
    cert = tmp_path / "c.pem"
    key.write_bytes(
        pki.ec.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert.write_bytes(pki.ec.certificate.public_bytes(serialization.Encoding.PEM))
    [bad] = _files(tmp_path, bad=document_bytes.replace(b"2026/11/20<", b"2099/11/20<"))
    out = tmp_path / "out.edxml"
    assert main(["sign", "--key", str(key), "--cert", str(cert), bad, "-o", str(out)]) == 1
    assert not out.exists()
    assert "in the future" in capsys.readouterr().err


def test_pki_init_makes_private_keys_0600_and_is_idempotent(tmp_path: Path, capsys: Capture) -> None:
    out = tmp_path / "pki"
    topology = ROOT / "config" / "example-province.toml"
    assert main(["pki", "init", "--topology", str(topology), "--out", str(out)]) == 0
    keys = sorted((out / "nodes").glob("*.key"))
    assert len(keys) == 13  # the bus node and twelve agencies
    assert all(stat.S_IMODE(os.stat(k).st_mode) == 0o600 for k in keys)
    assert f"{out}: 14 certificate(s) created" in capsys.readouterr().out  # 13 nodes and the CA
    before = {k: k.read_bytes() for k in keys}
    assert main(["pki", "init", "--topology", str(topology), "--out", str(out)]) == 0
    assert "0 certificate(s) created" in capsys.readouterr().out
    assert {k: k.read_bytes() for k in keys} == before


def test_pki_init_bad_topology_names_the_field(tmp_path: Path, capsys: Capture) -> None:
    bad = tmp_path / "t.toml"
    bad.write_text(
        'province = "X"\n[node]\norgan_id = "H99"\nname = "n"\n[[agencies]]\norgan_id = "1.2.3.4"\n'
        'name = "a"\nlevel = "province"\n',
        encoding="utf-8",
    )
    assert main(["pki", "init", "--topology", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "agencies.0.organ_id" in err


def test_console_script_is_installed(document_bytes: bytes, tmp_path: Path) -> None:
    """``bus`` is the entry point pyproject.toml declares, installed beside the interpreter, and it is
    ``entrypoints.cli:main``: the same usage, exit codes and output (issue 10: ``python -m
    entrypoints.cli`` proved nothing about ``[project.scripts]``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project.get("scripts", {}).get("bus") == "entrypoints.cli:main", (
        "pyproject.toml: [project.scripts] bus"
    )
    installed = [e for e in metadata.entry_points(group="console_scripts") if e.name == "bus"]
    assert [(e.value, e.dist.name if e.dist else None) for e in installed] == [
        ("entrypoints.cli:main", project["name"])
    ], "the installed metadata is stale: run scripts/setup.sh (pip install -e '.[dev]')"
    script = Path(sys.executable).parent / "bus"
    assert os.access(script, os.X_OK), f"{script} is missing: run scripts/setup.sh (pip install -e '.[dev]')"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *args], capture_output=True, text=True, timeout=60, check=False)

    bare = run()
    assert bare.returncode == 2  # usage error
    assert bare.stderr.startswith("usage: bus ")
    assert "the following arguments are required: command" in bare.stderr
    helped = run("--help")
    assert helped.returncode == 0
    assert "validate" in helped.stdout
    assert "pki" in helped.stdout
    envelope = tmp_path / "doc.edxml"
    envelope.write_bytes(document_bytes)
    validated = run("validate", str(envelope))
    assert (validated.returncode, validated.stdout) == (0, f"{envelope}: OK (document)\n")
