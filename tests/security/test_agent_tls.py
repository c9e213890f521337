"""docs/threat-model.md T16 (controller impersonation): the agent sends its token only to the controller it was provisioned
to trust — the CA in --ca-file and/or a public key pinned with --pin — and says why when it refuses; plain
ws:// to another host is warned about.

Everything is real and on loopback: certificates minted with `cryptography` (tests only: the agent does not
import it), a TLS WebSocket server (websockets) on 127.0.0.1 that records every HTTP request reaching it, the
agent's own connection code (`Agent._session_once`, one attempt of what `run_forever` repeats) and the
`teleops agent` command in a subprocess. The plain-ws:// warning for a non-loopback host is checked on the decision function only: no test
sends traffic anywhere but loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request

from teleops.agent.allowlist import Allowlist
from teleops.agent.client import Agent, AgentOptions, ControllerRefused
from teleops.agent.spool import Spool
from teleops.agent.tls import (
    Pin,
    PinMismatch,
    TLSConfigError,
    client_context,
    is_loopback_host,
    parse_pins,
    plaintext_warning,
    spki_der,
    spki_pin,
)
from teleops.cli.exit_codes import EXIT_CONFIG
from teleops.wire import Error, encode

DOCS = Path(__file__).resolve().parents[2] / "docs" / "install-agent.md"
OPENSSL_PIPELINE = (
    "openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary "
    "| base64"
)
TOKEN = "tlo_ag_test-secret-0123456789"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


# -- certificates ----------------------------------------------------------------------------------------------


def new_key(kind: str = "ec") -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pin(self) -> str:
        """What `cryptography` says the pin is (the agent's own DER walker is not used here)."""
        spki = self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = folder / f"{stem}.pem", folder / f"{stem}.key"
        cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_file, key_file


def _sign_algorithm(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def issue(
    common_name: str,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    kind: str = "ec",
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> Issued:
    """A CA (ca=True), or a server certificate for `hosts` signed by `issuer` (self-signed without one)."""
    key = new_key(kind)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, _sign_algorithm(signer)), key)


# -- the DER walker against cryptography -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_the_agent_reads_the_same_public_key_as_cryptography(kind: str) -> None:
    ca = issue("Test CA", ca=True, kind="ec")
    for issued in (ca, issue("controller", issuer=ca, kind=kind), issue("self-signed", kind=kind)):
        expected = issued.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert spki_der(issued.der) == expected
        assert str(spki_pin(issued.der)) == issued.pin


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + body


def test_a_v1_certificate_without_the_version_field_is_read_too() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old controller")]).public_bytes()
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ecdsa_sha256 = _der(0x30, _der(0x06, bytes.fromhex("2a8648ce3d040302")))
    validity = _der(0x30, _der(0x17, b"250101000000Z") + _der(0x17, b"350101000000Z"))
    tbs = _der(0x30, _der(0x02, b"\x01") + ecdsa_sha256 + name + validity + name + spki)  # no [0] version
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    certificate = _der(0x30, tbs + ecdsa_sha256 + _der(0x03, b"\x00" + signature))
    parsed = x509.load_der_x509_certificate(certificate)
    assert parsed.version is x509.Version.v1
    assert spki_der(certificate) == spki
    assert spki_der(certificate) == parsed.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_garbage_and_every_truncated_certificate_raise_value_error() -> None:
    certificate = issue("controller", kind="rsa").der  # RSA: multi-byte lengths at several levels
    for cut in range(len(certificate) - 1):
        with pytest.raises(ValueError, match=r"DER|tbsCertificate|certificate|subjectPublicKeyInfo"):
            spki_der(certificate[:cut])
    for junk in (b"", b"\x30", b"\x30\x80\x00\x00", b"\x04\x03abc", b"\x30\x03\x02\x01\x01", b"\x1f\x00" * 8):
        with pytest.raises(ValueError):  # noqa: PT011 — any ValueError: the pin check turns it into a refusal
            spki_der(junk)


# -- pins ------------------------------------------------------------------------------------------------------


def test_the_pin_forms_all_name_the_same_key() -> None:
    digest = hashlib.sha256(b"a public key").digest()
    b64, hexed = base64.b64encode(digest).decode(), digest.hex()
    forms = [
        f"sha256//{b64}",
        f"sha256:{b64}",
        f"SHA256//{b64.rstrip('=')}",
        f"sha256:{hexed}",
        f"sha256:{hexed.upper()}",
        "sha256:" + ":".join(hexed[i : i + 2] for i in range(0, 64, 2)),
    ]
    assert parse_pins(forms) == (Pin(digest),)
    other = hashlib.sha256(b"the next key").digest()
    both = parse_pins([f"sha256//{b64};sha256//{base64.b64encode(other).decode()}"])  # curl's separator
    assert both == (Pin(digest), Pin(other))
    assert str(Pin(digest)) == f"sha256//{b64}"


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "sha1//2jmj7l5rSw0yVb/vlWAYkK/YBwk=",
        "sha256//tooShort",
        "sha256//" + base64.b64encode(b"x" * 31).decode(),
        "sha256:" + "g" * 64,
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256//not base64 at all!!",
    ],
)
def test_a_malformed_pin_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(TLSConfigError, match="sha256//BASE64"):
        parse_pins([text])


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_the_documented_openssl_pipeline_gives_the_agents_pin(tmp_path: Path, kind: str) -> None:
    assert shutil.which("openssl"), "openssl is missing; scripts/test installs it"
    assert OPENSSL_PIPELINE in DOCS.read_text(encoding="utf-8"), "docs/install-agent.md must show this pipeline"
    issued = issue("controller", kind=kind)
    (tmp_path / "cert.pem").write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    output = subprocess.run(  # noqa: S602 — the documented shell pipeline, verbatim
        OPENSSL_PIPELINE, shell=True, cwd=tmp_path, capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    assert f"sha256//{output}" == str(spki_pin(issued.der)) == issued.pin
    assert parse_pins([f"sha256//{output}"]) == (spki_pin(issued.der),)


# -- plain ws:// -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("ws://10.0.0.5:8000/api/v1/agent/ws", "10.0.0.5"),
        ("http://teleops.example.org", "teleops.example.org"),
        ("ws://[2001:db8::1]:8000/api/v1/agent/ws", "2001:db8::1"),
        ("ws://192.168.1.10/api/v1/agent/ws", "192.168.1.10"),
        ("ws://localhost.example.org/api/v1/agent/ws", "localhost.example.org"),
        ("ws://0.0.0.0:8000/api/v1/agent/ws", "0.0.0.0"),
    ],
)
def test_plain_ws_to_another_host_is_warned_about(url: str, host: str) -> None:
    warning = plaintext_warning(url)
    assert warning == (
        f"sending the agent token in clear over ws:// to {host}: anyone on the path can read it and impersonate "
        "this agent; use https:// with --ca-file or --pin"
    )


@pytest.mark.parametrize(
    "url",
    [
        "ws://127.0.0.1:8000/api/v1/agent/ws",
        "ws://127.0.0.2:8000/api/v1/agent/ws",
        "ws://127.255.255.254/api/v1/agent/ws",
        "ws://localhost:8000/api/v1/agent/ws",
        "ws://LOCALHOST./api/v1/agent/ws",
        "ws://[::1]:8000/api/v1/agent/ws",
        "ws://[::ffff:127.0.0.1]:8000/api/v1/agent/ws",
        "wss://10.0.0.5/api/v1/agent/ws",
        "wss://teleops.example.org/api/v1/agent/ws",
    ],
)
def test_loopback_and_tls_stay_quiet(url: str) -> None:
    assert plaintext_warning(url) is None


def test_loopback_is_decided_without_resolving_names() -> None:
    assert is_loopback_host("localhost")
    assert is_loopback_host("127.9.9.9")
    assert is_loopback_host("[::1]")
    assert not is_loopback_host("ip6-localhost")  # might be loopback, but only by /etc/hosts: warned
    assert not is_loopback_host("10.0.0.5")


# -- a real TLS WebSocket server on loopback --------------------------------------------------------------------


@dataclass
class Controller:
    """A WebSocket server that records every HTTP request that reaches it, then refuses the agent politely."""

    url: str
    cert: Issued
    requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def tokens(self) -> list[str]:
        return [r["authorization"] for r in self.requests if "authorization" in r]


ControllerFactory = Callable[..., contextlib.AbstractAsyncContextManager[Controller]]


@pytest.fixture
def controller() -> ControllerFactory:
    @contextlib.asynccontextmanager
    async def run(cert: Issued | None, folder: Path) -> AsyncIterator[Controller]:
        context: ssl.SSLContext | None = None
        if cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*cert.write(folder, "server"))
        recorded: list[dict[str, str]] = []

        def record(connection: ServerConnection, request: Request) -> None:
            recorded.append({key.lower(): value for key, value in request.headers.raw_items()})

        async def handler(websocket: ServerConnection) -> None:
            await websocket.recv()  # the hello
            await websocket.send(encode(Error(code="recorded", message="test controller saw this agent")))
            await websocket.close()

        async with serve(handler, "127.0.0.1", 0, ssl=context, process_request=record) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            scheme = "https" if context is not None else "http"
            yield Controller(f"{scheme}://127.0.0.1:{port}", cert or issue("unused"), recorded)

    return run


def options(tmp_path: Path, server: str, *, ca_file: Path | None = None, pins: tuple[str, ...] = ()) -> AgentOptions:
    """What `teleops agent` builds from its command line (not through build_agent: that also installs the
    process-wide command policy, which must not leak into other tests)."""
    return AgentOptions(
        server_url=server, name="web-1", token=TOKEN, hostname="web-1", allowlist=Allowlist.deny_all(),
        spool=Spool(tmp_path / "state"), ca_file=ca_file, pins=parse_pins(pins),
    )  # fmt: skip


async def connect_once(agent_options: AgentOptions) -> None:
    """One connection attempt by the agent's own code."""
    try:
        await asyncio.wait_for(Agent(agent_options)._session_once(), 20)
    finally:
        agent_options.spool.close()


async def test_the_right_pin_connects_and_the_token_arrives(tmp_path: Path, controller: ControllerFactory) -> None:
    async with controller(issue("controller"), tmp_path / "server") as server:  # self-signed, no CA at all
        with pytest.raises(ControllerRefused, match="test controller saw this agent"):
            await connect_once(options(tmp_path, server.url, pins=(server.cert.pin,)))
    assert server.tokens == [f"Bearer {TOKEN}"]


async def test_one_of_several_pins_is_enough_for_rotation(tmp_path: Path, controller: ControllerFactory) -> None:
    next_key = issue("next controller key").pin
    async with controller(issue("controller"), tmp_path / "server") as server:
        hexed = base64.b64decode(server.cert.pin.removeprefix("sha256//")).hex()
        with pytest.raises(ControllerRefused):
            await connect_once(options(tmp_path, server.url, pins=(next_key, f"sha256:{hexed}")))
    assert server.tokens == [f"Bearer {TOKEN}"]


async def test_a_wrong_pin_refuses_says_why_and_sends_nothing(tmp_path: Path, controller: ControllerFactory) -> None:
    wanted = issue("the real controller").pin
    async with controller(issue("impostor"), tmp_path / "server") as server:
        with pytest.raises(PinMismatch) as refused:
            await connect_once(options(tmp_path, server.url, pins=(wanted,)))
        await asyncio.sleep(0.2)  # anything in flight would have arrived by now
    assert server.requests == []  # not one HTTP request, so no token
    assert str(refused.value) == (
        f"TLS pin mismatch: the controller at 127.0.0.1 presented {server.cert.pin}, expected one of {wanted}; "
        "not sending the token"
    )


async def test_a_valid_ca_certificate_with_the_wrong_pin_is_refused(
    tmp_path: Path, controller: ControllerFactory
) -> None:
    """T16 as written: the certificate chains to a trusted CA and names the host; the pin still rules."""
    ca = issue("Public CA", ca=True)
    ca_file, _ = ca.write(tmp_path / "ca", "ca")
    wanted = issue("the real controller").pin
    async with controller(issue("controller", issuer=ca), tmp_path / "server") as server:
        with pytest.raises(ControllerRefused):  # the CA alone accepts it: the certificate really is valid
            await connect_once(options(tmp_path, server.url, ca_file=ca_file))
        assert len(server.tokens) == 1
        with pytest.raises(PinMismatch, match=re.escape(f"presented {server.cert.pin}, expected one of {wanted};")):
            await connect_once(options(tmp_path, server.url, ca_file=ca_file, pins=(wanted,)))
        with pytest.raises(ControllerRefused):  # CA and pin both right
            await connect_once(options(tmp_path, server.url, ca_file=ca_file, pins=(server.cert.pin,)))
    assert len(server.requests) == 2


async def test_ca_file_trusts_only_its_own_ca(tmp_path: Path, controller: ControllerFactory) -> None:
    ours, theirs = issue("Our CA", ca=True), issue("Another CA", ca=True)
    ca_file, _ = ours.write(tmp_path / "ca", "ca")
    async with controller(issue("controller", issuer=theirs), tmp_path / "server") as server:
        with pytest.raises(ssl.SSLCertVerificationError) as refused:
            await connect_once(options(tmp_path, server.url, ca_file=ca_file))
        # --ca-file with a pin of the right key still needs the right CA: both must hold.
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect_once(options(tmp_path, server.url, ca_file=ca_file, pins=(server.cert.pin,)))
        await asyncio.sleep(0.2)
    assert not isinstance(refused.value, PinMismatch)
    assert server.requests == []


async def test_ca_file_checks_the_host_name(tmp_path: Path, controller: ControllerFactory) -> None:
    ca = issue("Our CA", ca=True)
    ca_file, _ = ca.write(tmp_path / "ca", "ca")
    async with controller(issue("other", issuer=ca, hosts=("other.example.org",)), tmp_path / "server") as server:
        with pytest.raises(ssl.SSLCertVerificationError, match=r"IP address mismatch|hostname"):
            await connect_once(options(tmp_path, server.url, ca_file=ca_file))
    assert server.requests == []


async def test_pinning_the_certificate_instead_of_its_key_gets_a_hint(
    tmp_path: Path, controller: ControllerFactory
) -> None:
    async with controller(issue("controller"), tmp_path / "server") as server:
        fingerprint = "sha256:" + hashlib.sha256(server.cert.der).hexdigest()
        with pytest.raises(PinMismatch, match="SHA-256 of the whole certificate; pins are of its public key"):
            await connect_once(options(tmp_path, server.url, pins=(fingerprint,)))
    assert server.requests == []


async def test_the_pinned_context_also_refuses_on_a_blocking_socket(
    tmp_path: Path, controller: ControllerFactory
) -> None:
    """The agent uses asyncio; the context pins on plain `ssl` sockets too, should anything wrap one with it."""
    wanted = issue("the real controller").pin

    def handshake(port: int, pin: str) -> None:
        context = client_context(None, parse_pins([pin]))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    async with controller(issue("impostor"), tmp_path / "server") as server:
        port = int(server.url.rsplit(":", 1)[1])
        with pytest.raises(PinMismatch, match="TLS pin mismatch"):
            await asyncio.to_thread(handshake, port, wanted)
        await asyncio.to_thread(handshake, port, server.cert.pin)
        await asyncio.sleep(0.2)
    assert len(server.requests) == 1  # only the right pin's request


def test_pin_or_ca_file_with_a_plain_http_server_is_refused(tmp_path: Path) -> None:
    pin = issue("controller").pin
    for plain in (
        options(tmp_path, "http://teleops.example.org", pins=(pin,)),
        options(tmp_path, "http://teleops.example.org", ca_file=tmp_path / "ca.pem"),
    ):
        with pytest.raises(TLSConfigError, match=r"need an https:// --server.*token would travel in clear"):
            Agent(plain)
        plain.spool.close()


def test_an_unusable_ca_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "not-a-ca.pem").write_text("hello\n")
    for ca_file in (tmp_path / "missing.pem", tmp_path / "not-a-ca.pem"):
        agent_options = options(tmp_path, "https://teleops.example.org", ca_file=ca_file)
        with pytest.raises(TLSConfigError, match=re.escape(f"cannot use --ca-file {ca_file}:")):
            Agent(agent_options)
        agent_options.spool.close()


# -- `teleops agent`, the real command ---------------------------------------------------------------------------


@dataclass
class AgentRun:
    process: asyncio.subprocess.Process
    log: Path

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    async def wait_for(self, predicate: Callable[[str], bool], what: str, timeout: float = 20) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            text = self.text()
            if predicate(text):
                return text
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.1)
        raise AssertionError(f"waited for {what}; the agent's log:\n{self.text()}")


@contextlib.asynccontextmanager
async def teleops_agent(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> AsyncIterator[AgentRun]:
    token_file = tmp_path / "agent.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    log = tmp_path / "agent.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TELEOPS_", "SSL_CERT_"))}
    environment |= env or {}
    argv = [sys.executable, "-m", "teleops", "agent", "--name", "web-1", "--token-file", str(token_file)]
    argv += ["--state-dir", str(tmp_path / "state"), *args]
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT, env=environment
        )
    try:
        yield AgentRun(process, log)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


async def test_teleops_agent_with_a_wrong_pin_keeps_refusing_loudly(
    tmp_path: Path, controller: ControllerFactory
) -> None:
    wanted = issue("the real controller").pin
    async with controller(issue("impostor"), tmp_path / "server") as server:
        args = ("--server", server.url, "--pin", wanted)
        async with teleops_agent(tmp_path, *args) as agent:
            text = await agent.wait_for(
                lambda t: len(lines_with(t, "TLS pin mismatch")) >= 2, "two refused attempts (it retries)"
            )
        assert server.requests == []
    refusals = lines_with(text, "TLS pin mismatch")
    assert all("[error" in line and "agent.controller_untrusted" in line for line in refusals), refusals
    assert f"the controller at 127.0.0.1 presented {server.cert.pin}, expected one of {wanted}" in refusals[0]
    assert "not sending the token" in refusals[0]
    assert TOKEN not in text


async def test_teleops_agent_with_the_right_pin_sends_its_token(tmp_path: Path, controller: ControllerFactory) -> None:
    async with controller(issue("controller"), tmp_path / "server") as server:
        args = ("--server", server.url, "--pin", "sha256//" + "A" * 43 + "=", "--pin", server.cert.pin)
        async with teleops_agent(tmp_path, *args) as agent:
            await agent.wait_for(lambda t: "test controller saw this agent" in t, "the controller's answer")
    assert server.tokens[0] == f"Bearer {TOKEN}"
    assert "token_in_clear" not in agent.text()
    assert "controller_not_pinned" not in agent.text()


async def test_teleops_agent_on_the_system_store_warns_it_is_not_pinned(
    tmp_path: Path, controller: ControllerFactory
) -> None:
    ca = issue("Stand-in public CA", ca=True)
    ca_file, _ = ca.write(tmp_path / "ca", "ca")
    async with controller(issue("controller", issuer=ca), tmp_path / "server") as server:
        env = {"SSL_CERT_FILE": str(ca_file)}  # OpenSSL's default store, pointed at our CA
        async with teleops_agent(tmp_path, "--server", server.url, env=env) as agent:
            text = await agent.wait_for(lambda t: "test controller saw this agent" in t, "the controller's answer")
    assert server.tokens[0] == f"Bearer {TOKEN}"
    assert len(lines_with(text, "agent.controller_not_pinned")) == 1


async def test_teleops_agent_over_plain_ws_on_loopback_stays_quiet(
    tmp_path: Path, controller: ControllerFactory
) -> None:
    async with controller(None, tmp_path / "server") as server:
        assert server.url.startswith("http://127.0.0.1:")
        async with teleops_agent(tmp_path, "--server", server.url) as agent:
            text = await agent.wait_for(lambda t: "test controller saw this agent" in t, "the controller's answer")
    assert server.tokens[0] == f"Bearer {TOKEN}"
    assert "token_in_clear" not in text
    assert "in clear" not in text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--server", "http://127.0.0.1:9", "--pin", "sha256//" + "A" * 43 + "="), "need an https:// --server"),
        (("--server", "http://127.0.0.1:9", "--ca-file", "/etc/hostname"), "need an https:// --server"),
        (("--server", "https://127.0.0.1:9", "--pin", "sha256//nope"), "--pin 'sha256//nope' is not a SHA-256"),
        (("--server", "https://127.0.0.1:9", "--ca-file", "/nonexistent/ca.pem"), "cannot use --ca-file"),
    ],
)
async def test_teleops_agent_stops_at_start_on_unusable_tls_options(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    async with teleops_agent(tmp_path, *args) as agent:
        assert await asyncio.wait_for(agent.process.wait(), 30) == EXIT_CONFIG
    assert says in agent.text()
