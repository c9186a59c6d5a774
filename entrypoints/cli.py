"""The ``bus`` command.

Exit status: 0 success, 1 the input is bad (problems on stderr with element path and line), 2 usage,
configuration or connection error. Output for scripts goes to stdout, one line per file; diagnostics
to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from lxml import etree

from bus.checks import sender_text
from bus.dsig import SignatureConfig, TrustStore, load_certificates, load_private_key, sign_tree, verify_tree
from bus.dsig.revocation import RevocationPolicy, UncheckedRevocation, registry_from_files
from bus.envelope import check_tree, read_envelope
from bus.errors import BusError, ConfigError, EnvelopeInvalidError, InputError, RevocationUnknownError
from bus.pki import init_pki
from bus.settings import load_topology
from bus.xmlparse import parse_untrusted
from entrypoints.cli_amqp import add_commands as add_amqp_commands
from entrypoints.cli_audit import add_commands as add_audit_commands
from entrypoints.cli_axis import add_commands as add_axis_commands
from entrypoints.cli_operator import add_commands as add_operator_commands
from entrypoints.cli_service import add_commands
from entrypoints.cli_status import add_commands as add_status_commands

__all__ = ["main"]

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc


def _report(path: Path, exc: InputError | RevocationUnknownError) -> None:
    """One stdout line per failed file; every problem on stderr as ``FILE:LINE: PATH: message``."""
    if isinstance(exc, EnvelopeInvalidError):
        print(f"{path}: INVALID ({len(exc.problems)} problem(s))")
        for problem in exc.problems:
            _err(f"{path}:{problem.line or 0}: {problem.path}: {problem.message}")
    else:
        print(f"{path}: INVALID")
        _err(f"{path}: {exc}")


def cmd_validate(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        try:
            parsed = read_envelope(_read(path))
        except InputError as exc:
            _report(path, exc)
            status = EXIT_BAD_INPUT
            continue
        counted = f", {len(parsed.warnings)} warning(s)" if parsed.warnings else ""
        print(f"{path}: OK ({parsed.kind.value}{counted})")
        for warning in parsed.warnings:
            _err(f"{path}:{warning.line or 0}: warning: {warning.path}: {warning.message}")
    return status


def cmd_sign(args: argparse.Namespace) -> int:
    key = load_private_key(args.key)
    certificates = load_certificates(args.cert)
    if not certificates:
        raise ConfigError(f"{args.cert}: no certificate found")
    tree = parse_untrusted(_read(args.input))
    check_tree(tree)  # never vouch for an envelope the bus would itself reject
    sign_tree(tree, key, certificates[0], certificates[1:])
    output = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
    if args.output is None or str(args.output) == "-":
        sys.stdout.buffer.write(output)
    else:
        args.output.write_bytes(output)
        _err(f"signed {args.input} -> {args.output}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    trust = TrustStore.from_pem_files(args.ca)
    unchecked: list[UncheckedRevocation] = []
    if args.crl:
        # Offline: the CRLs named, each matched to the --ca that issued it; no network.
        crls = registry_from_files(
            args.crl,
            trust.anchors,
            RevocationPolicy(args.crl_policy),
            now=dt.datetime.now(dt.UTC),
            on_unchecked=unchecked.append,
        )
        trust = TrustStore(trust.anchors, crls)
    status = EXIT_OK
    for path in args.files:
        unchecked.clear()
        try:
            tree = parse_untrusted(_read(path))
            sender = sender_text(tree.getroot())
            config = SignatureConfig(
                sha1_senders=frozenset({sender}) if args.allow_sha1 and sender else frozenset()
            )
            results = verify_tree(tree, trust, config)
            check_tree(parse_untrusted(results[0].signed_xml))  # what was signed must itself be valid
        except (InputError, RevocationUnknownError) as exc:  # not proven unrevoked is not verified
            _report(path, exc)
            status = EXIT_BAD_INPUT
            continue
        signers = "; ".join(f"{r.signer_name} ({r.signature_method.rsplit('#', 1)[-1]})" for r in results)
        print(f"{path}: OK ({len(results)} signature(s): {signers})")
        if args.allow_sha1 and any("sha1" in r.signature_method for r in results):
            _err(f"{path}: warning: accepted a SHA-1 signature because --allow-sha1 was given")
        for notice in unchecked:
            _err(f"{path}: warning: {notice} (--crl-policy accept-and-flag)")
    return status


def cmd_pki_init(args: argparse.Namespace) -> int:
    topology = load_topology(args.topology)
    created = init_pki(topology, args.out, kind=args.key_type, progress=_err)
    print(f"{args.out}: {created} certificate(s) created")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bus", description="Inter-agency document exchange bus (edXML).")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="schema and business checks of envelopes")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.set_defaults(handler=cmd_validate)

    sign = commands.add_parser("sign", help="sign an envelope (XML-DSig, bus profile)")
    sign.add_argument("--key", required=True, type=Path, help="PEM private key (RSA-2048+ or ECDSA P-256)")
    sign.add_argument("--cert", required=True, type=Path, help="PEM certificate, then any intermediates")
    sign.add_argument("input", type=Path, metavar="IN")
    sign.add_argument("-o", "--output", type=Path, metavar="OUT", help="output file (default: stdout)")
    sign.set_defaults(handler=cmd_sign)

    verify = commands.add_parser("verify", help="verify envelope signatures against trusted CAs")
    verify.add_argument("--ca", required=True, type=Path, action="append", help="PEM file of trusted CAs")
    verify.add_argument(
        "--allow-sha1",
        action="store_true",
        help="accept SHA-1 signatures from the senders of the files named here (legacy)",
    )
    verify.add_argument(
        "--crl",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="CRL (DER or PEM) of one of the --ca CAs: refuse certificates it revokes (repeatable)",
    )
    verify.add_argument(
        "--crl-policy",
        choices=[p.value for p in RevocationPolicy],
        default=RevocationPolicy.REFUSE.value,
        help="when a --crl is past its nextUpdate: refuse (default) or accept with a warning on stderr",
    )
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE")
    verify.set_defaults(handler=cmd_verify)

    pki = commands.add_parser("pki", help="development PKI").add_subparsers(dest="pki_command", required=True)
    pki_init = pki.add_parser("init", help="create a CA and a key and certificate per node of a topology")
    pki_init.add_argument("--topology", required=True, type=Path)
    pki_init.add_argument("--out", required=True, type=Path)
    pki_init.add_argument("--key-type", choices=("ec", "rsa"), default="ec")
    pki_init.set_defaults(handler=cmd_pki_init)

    add_commands(commands)
    add_status_commands(commands)
    add_operator_commands(commands)
    add_axis_commands(commands)
    add_amqp_commands(commands)
    add_audit_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except InputError as exc:
        _err(f"error: {exc}")
        return EXIT_BAD_INPUT
    except ConfigError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except BusError as exc:  # the broker or another service is unavailable
        _err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
