"""A local RFC 3161 time-stamping authority for tests: the ``openssl ts -reply`` CLI behind loopback HTTP.

The TSA is openssl's own, not ours, so the tests check :mod:`bus.timestamp` against tokens that a
real implementation wrote. Each :class:`LocalTsa` has its own CA; a second one is a *foreign* TSA
(its CA is not trusted). openssl stamps with the system clock, so a stale time-stamp is a fresh token
checked against a window that excludes now (``not_before`` in the future, ``not_after`` in the past).

The CA's key is ECDSA P-256; the TSA's is too by default (fast to make), or RSA 2048 with
``key_type="rsa"``.
"""

from __future__ import annotations

import http.server
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal

from cryptography import x509

__all__ = ["LocalTsa"]

_TSA_EXTENSIONS = """\
[tsa_cert]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

# openssl ts's configuration (man openssl-ts, "Configuration File Options"). SHA-1 is left out of
# ``digests`` so that a SHA-1 query is answered with a rejection (badAlg).
_TS_CONFIG = """\
[tsa]
default_tsa = tsa_config

[tsa_config]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/ca.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _openssl(*args: str | Path, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *map(str, args)], input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


class LocalTsa:
    """A TSA on ``url`` (127.0.0.1, a free port) while the context is open.

    ``rewrite_query``, when set, changes each query before openssl reads it: garbage gets a rejection,
    another nonce gets a reply that does not answer the query sent, and a RuntimeError gets HTTP 500.
    ``requests`` counts the POSTs.
    """

    def __init__(
        self,
        name: str = "Test TSA",
        *,
        key_type: Literal["ec", "rsa"] = "ec",
        rewrite_query: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.name = name
        self.key_type = key_type
        self.rewrite_query = rewrite_query
        self.requests = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="tsa-")
        self.dir = Path(self._tmp.name)
        self._lock = threading.Lock()  # openssl ts updates the serial file: one reply at a time
        self._make_pki()
        self.ca_certificate = x509.load_pem_x509_certificate(self.ca_pem_path.read_bytes())
        self.tsa_certificate = x509.load_pem_x509_certificate(self.tsa_pem_path.read_bytes())
        self._httpd = self._make_server()
        self._thread: threading.Thread | None = None
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/tsa"

    @property
    def ca_pem_path(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def ca_key_path(self) -> Path:
        return self.dir / "ca.key"

    @property
    def tsa_pem_path(self) -> Path:
        return self.dir / "tsa.pem"

    @property
    def tsa_key_path(self) -> Path:
        return self.dir / "tsa.key"

    @staticmethod
    def _new_key(path: Path, key_type: Literal["ec", "rsa"] = "ec") -> None:
        if key_type == "ec":
            _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
        else:
            _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)

    def _make_pki(self) -> None:
        d = self.dir
        self._new_key(self.ca_key_path)
        _openssl(
            "req", "-x509", "-new", "-key", self.ca_key_path, "-out", self.ca_pem_path, "-days", "30",
            "-subj", f"/O=Tests/CN={self.name} CA", "-sha256",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        self._new_key(self.tsa_key_path, self.key_type)
        (d / "tsa_ext.cnf").write_text(_TSA_EXTENSIONS)
        subject = f"/O=Tests/CN={self.name}"
        _openssl("req", "-new", "-key", self.tsa_key_path, "-out", d / "tsa.csr", "-subj", subject)
        _openssl(
            "x509", "-req", "-in", d / "tsa.csr", "-CA", self.ca_pem_path, "-CAkey", self.ca_key_path,
            "-set_serial", "4660", "-days", "7", "-sha256", "-out", self.tsa_pem_path,
            "-extfile", d / "tsa_ext.cnf", "-extensions", "tsa_cert",
        )  # fmt: skip
        (d / "serial").write_text("01\n")
        (d / "ts.cnf").write_text(_TS_CONFIG.format(dir=d))

    def reply(self, query: bytes) -> bytes:
        """The DER TimeStampResp that ``openssl ts -reply`` writes for *query* (without HTTP)."""
        with self._lock:
            query_path = self.dir / "query.tsq"
            query_path.write_bytes(query)
            return _openssl(
                "ts", "-reply", "-config", self.dir / "ts.cnf", "-queryfile", query_path,
                "-signer", self.tsa_pem_path, "-inkey", self.tsa_key_path, "-chain", self.ca_pem_path,
            )  # fmt: skip

    def _make_server(self) -> http.server.ThreadingHTTPServer:
        tsa = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                tsa.requests += 1
                query = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_error(415)
                    return
                try:
                    if tsa.rewrite_query is not None:
                        query = tsa.rewrite_query(query)
                    body = tsa.reply(query)
                except RuntimeError:  # openssl failed, or a test's rewrite_query plays a broken TSA
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def __enter__(self) -> LocalTsa:
        # A short poll interval: shutdown() waits for one, and the tests close a TSA each.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._tmp.cleanup()
