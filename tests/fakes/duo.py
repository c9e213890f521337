"""A fake Duo Auth API server on loopback HTTPS, spoken to by the real duo_client.

It serves `POST /auth/v2/preauth`, `POST /auth/v2/auth` (async push) and `GET /auth/v2/auth_status` and
checks every request's signature the way Duo documents it (sig_version 5, which duo_client sends): the
`Authorization` header is `Basic base64(ikey:hex(HMAC-SHA512(skey, canonical)))`, where canonical is the
lines Date, METHOD, host, path, the sorted percent-encoded query parameters, SHA-512 of the body and SHA-512 of
the `X-Duo-*` headers. A wrong signature gets Duo's 401 (code 40103).

The TLS certificate is a throwaway self-signed one made with `cryptography`; the client trusts it through
duo_client's `ca_certs`. Answers are programmable per user (`FakeDuo.answers`): approve, deny, timeout,
wait (until `resolve`), enroll, refused-by-preauth, 5xx, slow (longer than the client's timeout), and
unreachable (the connection is closed without an answer). Every verified request is kept in `requests`.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import ipaddress
import itertools
import json
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Answer", "DuoRequest", "FakeDuo"]


class Answer(enum.StrEnum):
    APPROVE = "approve"  # the person taps Approve
    DENY = "deny"  # the person taps Deny
    TIMEOUT = "timeout"  # nobody answers; Duo ends the push
    WAIT = "wait"  # auth_status says "waiting" until the test calls resolve()
    ENROLL = "enroll"  # preauth: the user must enroll first
    REFUSE = "refuse"  # preauth: Duo denies the user
    ERROR_5XX = "5xx"  # every call answers 503
    SLOW = "slow"  # every call answers only after `slow_seconds`
    UNREACHABLE = "unreachable"  # the connection is closed without an answer


@dataclass(frozen=True)
class DuoRequest:
    method: str
    path: str
    params: dict[str, str]


@dataclass
class _Txn:
    user: str
    answer: Answer


@dataclass
class FakeDuo:
    ikey: str = "DIXXXXXXXXXXXXXXXXXX"
    skey: str = "fake-duo-secret-key-0123456789abcdefghij"
    default: Answer = Answer.APPROVE
    answers: dict[str, Answer] = field(default_factory=dict)
    slow_seconds: float = 5.0
    requests: list[DuoRequest] = field(default_factory=list)
    rejected_signatures: int = 0

    def __post_init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="fake-duo-"))
        self.ca_certs = self._dir / "cert.pem"
        self._txns: dict[str, _Txn] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        key_path = self._dir / "key.pem"
        _self_signed(self.ca_certs, key_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_certs, key_path)
        fake = self

        class Handler(_Handler):
            owner = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def api_host(self) -> str:
        assert self._server is not None, "start() first"
        return f"127.0.0.1:{self._server.server_address[1]}"

    # -- programming and reading -------------------------------------------------------------------

    def answer_for(self, user: str) -> Answer:
        return self.answers.get(user, self.default)

    def resolve(self, user: str, answer: Answer) -> int:
        """Answer every push of `user` still waiting; returns how many there were."""
        with self._lock:
            waiting = [t for t in self._txns.values() if t.user == user and t.answer is Answer.WAIT]
            for txn in waiting:
                txn.answer = answer
        return len(waiting)

    def pushes(self) -> list[DuoRequest]:
        return [r for r in self.requests if r.path == "/auth/v2/auth"]

    # -- the API -----------------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        user = params.get("username", "")
        if path == "/auth/v2/auth_status":
            with self._lock:
                txn = self._txns.get(params.get("txid", ""))
            if txn is None:
                return 400, {
                    "stat": "FAIL",
                    "code": 40002,
                    "message": "Invalid request parameters",
                    "message_detail": "txid",
                }
            return 200, {"stat": "OK", "response": _status(txn.answer)}
        answer = self.answer_for(user)
        if path == "/auth/v2/preauth":
            if answer is Answer.ENROLL:
                return 200, {
                    "stat": "OK",
                    "response": {"result": "enroll", "status_msg": "Enroll an authentication device."},
                }
            if answer is Answer.REFUSE:
                return 200, {"stat": "OK", "response": {"result": "deny", "status_msg": "Access denied."}}
            return 200, {
                "stat": "OK",
                "response": {
                    "result": "auth",
                    "status_msg": "Account is active",
                    "devices": [{"device": "DPFAKE", "capabilities": ["push"]}],
                },
            }
        if path == "/auth/v2/auth":
            if params.get("factor") != "push" or params.get("async") != "1":
                return 400, {
                    "stat": "FAIL",
                    "code": 40002,
                    "message": "Invalid request parameters",
                    "message_detail": "factor",
                }
            txid = f"txn-{next(self._ids)}"
            with self._lock:
                self._txns[txid] = _Txn(user, answer)
            return 200, {"stat": "OK", "response": {"txid": txid}}
        return 404, {"stat": "FAIL", "code": 40401, "message": "Resource not found"}

    def check_signature(self, method: str, host: str, path: str, query: str, body: str, headers: Any) -> bool:
        auth = headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        try:
            ikey, _, sig = base64.b64decode(auth[6:]).decode("ascii").partition(":")
        except ValueError:
            return False
        duo_headers = sorted((k.lower(), v) for k, v in headers.items() if k.lower().startswith("x-duo-"))
        canon_headers = "\x00".join(part for pair in duo_headers for part in pair)
        canonical = "\n".join(
            [
                headers.get("Date", ""),
                method.upper(),
                host.lower(),
                path,
                _canon_params(parse_qsl(query, keep_blank_values=True)),
                hashlib.sha512(body.encode("utf-8")).hexdigest(),
                hashlib.sha512(canon_headers.encode("utf-8")).hexdigest(),
            ]
        )
        expected = hmac.new(self.skey.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha512).hexdigest()
        return hmac.compare_digest(ikey, self.ikey) and hmac.compare_digest(sig, expected)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeDuo
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet in test output
        return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        fake = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8") if length else ""
        url = urlsplit(self.path)
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if not fake.check_signature(method, host, url.path, url.query, body, self.headers):
            fake.rejected_signatures += 1
            self._send(401, {"stat": "FAIL", "code": 40103, "message": "Invalid signature in request credentials"})
            return
        params = (
            dict(parse_qsl(url.query)) if method == "GET" else {k: str(v) for k, v in json.loads(body or "{}").items()}
        )
        fake.requests.append(DuoRequest(method, url.path, params))
        user = params.get("username") or ""
        answer = fake.answer_for(user) if user else None
        if answer is Answer.UNREACHABLE:
            self.close_connection = True
            self.connection.close()
            return
        if answer is Answer.ERROR_5XX:
            self._send(503, {"stat": "FAIL", "code": 50301, "message": "Service unavailable"})
            return
        if answer is Answer.SLOW:
            fake._stopping.wait(fake.slow_seconds)
        status, payload = fake.handle(method, url.path, params)
        self._send(status, payload)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timeout); nothing to answer
            self.close_connection = True


def _status(answer: Answer) -> dict[str, str]:
    if answer is Answer.WAIT:
        return {"result": "waiting", "status": "pushed", "status_msg": "Pushed a login request to your device..."}
    if answer is Answer.DENY:
        return {"result": "deny", "status": "deny", "status_msg": "Login request denied."}
    if answer is Answer.TIMEOUT:
        return {"result": "deny", "status": "timeout", "status_msg": "Login timed out."}
    return {"result": "allow", "status": "allow", "status_msg": "Success. Logging you in..."}


def _canon_params(pairs: list[tuple[str, str]]) -> str:
    """Duo's canonical parameters: percent-encode (RFC 3986, `~` safe) keys and values, sort, join with &."""
    encoded = sorted((quote(k, "~"), quote(v, "~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _self_signed(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("127.0.0.1"),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
