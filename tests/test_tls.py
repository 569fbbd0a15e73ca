"""wss://: the relay serves TLS when given a certificate and key."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio
import trio_websocket as tw
import trustme

import trio_wsproxy
from trio_wsproxy import RelayConfig, TLSConfigError, open_relay
from trio_wsproxy._serve import load_tls_context


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_config(ca: trustme.CA, tmp_path: Path) -> RelayConfig:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return RelayConfig(port=0, certfile=str(certfile), keyfile=str(keyfile))


async def test_members_talk_over_wss(ca: trustme.CA, tls_config: RelayConfig) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with open_relay(tls_config) as relay:
        assert relay.url.startswith("wss://127.0.0.1:")
        async with (
            tw.open_websocket_url(f"{relay.url}?id=a&groupName=g", ssl_context=context) as a,
            tw.open_websocket_url(f"{relay.url}?id=b&groupName=g", ssl_context=context) as b,
        ):
            with trio.fail_after(5):
                await relay.wait_members(2, "g")
                await a.send_message("secret")
                assert await b.get_message() == "secret"


async def test_plaintext_and_untrusted_clients_fail_without_harming_members(
    ca: trustme.CA, tls_config: RelayConfig
) -> None:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with open_relay(tls_config) as relay:
        async with tw.open_websocket_url(f"{relay.url}?id=a&groupName=g", ssl_context=context) as a:
            plain = await trio.open_tcp_stream("127.0.0.1", relay.port)
            await plain.send_all(b"GET /ws?id=x&groupName=g HTTP/1.1\r\n\r\n")
            with trio.fail_after(5):
                assert await plain.receive_some(100) == b""  # no TLS: dropped
            untrusting = trio.SSLStream(
                await trio.open_tcp_stream("127.0.0.1", relay.port),
                ssl.create_default_context(),
                server_hostname="127.0.0.1",
            )
            with pytest.raises(trio.BrokenResourceError), trio.fail_after(5):
                await untrusting.do_handshake()
            await trio.aclose_forcefully(untrusting)
            async with tw.open_websocket_url(
                f"{relay.url}?id=b&groupName=g", ssl_context=context
            ) as b:
                with trio.fail_after(5):
                    await relay.wait_members(2, "g")
                    await b.send_message("still here")
                    assert await a.get_message() == "still here"


# -- a certificate the relay cannot use: named, with what is wrong, in one line ---------


def _encrypted_key(cert: trustme.LeafCert, traditional: bool) -> bytes:
    # trustme writes keys unencrypted; cryptography (trustme's own dependency) encrypts.
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    form = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if traditional
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(
        serialization.Encoding.PEM, form, serialization.BestAvailableEncryption(b"passphrase")
    )


def _corrupt(pem: bytes) -> bytes:
    """``pem`` with its body damaged but its BEGIN and END lines intact."""
    lines = pem.splitlines(keepends=True)
    middle = len(lines) // 2
    lines[middle] = b"A" * (len(lines[middle]) - 1) + b"\n"
    lines[middle + 1] = b"!!!!" + lines[middle + 1][4:]
    return b"".join(lines)


@attrs.frozen
class TLSFiles:
    """The files of one case: what --certfile and --keyfile are given."""

    certfile: str
    keyfile: str


# case -> (what the files are, the words the error says after the file's name)
CASES = {
    "certfile missing": ("missing", "key", "certfile {certfile!r} does not exist"),
    "keyfile missing": ("cert", "missing", "keyfile {keyfile!r} does not exist"),
    "certfile a directory": ("directory", "key", "certfile {certfile!r} is a directory"),
    "certfile empty": ("empty", "key", "certfile {certfile!r} is empty"),
    "certfile path through a file": (
        "through a file",
        "key",
        "cannot read certfile {certfile!r}: Not a directory",
    ),
    "keyfile empty": ("cert", "empty", "keyfile {keyfile!r} is empty"),
    "swapped": (
        "key",
        "cert",
        "certfile {certfile!r} holds a private key, not a certificate "
        "(are certfile and keyfile swapped?)",
    ),
    "keyfile holds the certificate": (
        "cert",
        "cert",
        "keyfile {keyfile!r} holds a certificate, not a private key "
        "(are certfile and keyfile swapped?)",
    ),
    "certfile not PEM": (
        "text",
        "key",
        "certfile {certfile!r} is not a PEM certificate (no '-----BEGIN CERTIFICATE-----' line)",
    ),
    "certfile DER": (
        "der",
        "key",
        "certfile {certfile!r} is not a PEM certificate (no '-----BEGIN CERTIFICATE-----' line)",
    ),
    "keyfile not PEM": (
        "cert",
        "text",
        "keyfile {keyfile!r} is not a PEM private key (no '-----BEGIN PRIVATE KEY-----' line)",
    ),
    "certificate corrupt": (
        "corrupt cert",
        "key",
        "certfile {certfile!r} holds a certificate that cannot be read (corrupt PEM)",
    ),
    "key corrupt": (
        "cert",
        "corrupt key",
        "keyfile {keyfile!r} holds a private key that cannot be read",
    ),
    "key of another certificate": (
        "cert",
        "other key",
        "keyfile {keyfile!r} does not belong to the certificate in certfile {certfile!r} "
        "(it is the key of another certificate)",
    ),
    "key encrypted (PKCS #8)": (
        "cert",
        "encrypted key",
        "keyfile {keyfile!r} is encrypted with a passphrase, which the relay cannot ask for",
    ),
    "key encrypted (traditional)": (
        "cert",
        "encrypted traditional key",
        "keyfile {keyfile!r} is encrypted with a passphrase, which the relay cannot ask for",
    ),
}


def make_file(kind: str, ca: trustme.CA, path: Path) -> str:
    """A file of ``kind`` (see CASES, other than the good cert and key) at ``path``."""
    cert = ca.issue_cert("127.0.0.1")
    if kind == "missing":
        return str(path)
    if kind == "directory":
        path.mkdir()
        return str(path)
    if kind == "through a file":  # what even root cannot open
        path.write_text("a file, not a directory\n")
        return str(path / "cert.pem")
    pem = cert.cert_chain_pems[0].bytes()
    contents: dict[str, Callable[[], bytes]] = {
        "empty": lambda: b"",
        "text": lambda: b"this is not a certificate\n",
        "der": lambda: ssl.PEM_cert_to_DER_cert(pem.decode()),
        "corrupt cert": lambda: _corrupt(pem),
        "corrupt key": lambda: _corrupt(cert.private_key_pem.bytes()),
        "other key": lambda: cert.private_key_pem.bytes(),  # of another certificate
        "encrypted key": lambda: _encrypted_key(cert, traditional=False),
        "encrypted traditional key": lambda: _encrypted_key(cert, traditional=True),
    }
    path.write_bytes(contents[kind]())
    return str(path)


@pytest.fixture
def shared_leaf(ca: trustme.CA, tmp_path: Path) -> tuple[str, str]:
    """A certificate and its own key: the good file of a case whose other file is bad."""
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "good-cert.pem", tmp_path / "good-key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    return str(certfile), str(keyfile)


def case_files(case: str, ca: trustme.CA, tmp_path: Path, good: tuple[str, str]) -> TLSFiles:
    """The two files of ``case``; "cert" and "key" are the good certificate and its key."""

    def file(kind: str, role: str) -> str:
        if kind in ("cert", "key"):
            return good[0] if kind == "cert" else good[1]
        return make_file(kind, ca, tmp_path / f"{role}-{kind.replace(' ', '-')}.pem")

    cert_kind, key_kind, _ = CASES[case]
    return TLSFiles(file(cert_kind, "certfile"), file(key_kind, "keyfile"))


def expected_message(case: str, files: TLSFiles) -> str:
    return CASES[case][2].format(certfile=files.certfile, keyfile=files.keyfile)


@pytest.mark.parametrize("case", list(CASES))
def test_each_unusable_certificate_is_named_with_what_is_wrong(
    case: str, ca: trustme.CA, tmp_path: Path, shared_leaf: tuple[str, str]
) -> None:
    files = case_files(case, ca, tmp_path, shared_leaf)
    with pytest.raises(TLSConfigError) as raised:
        load_tls_context(RelayConfig(port=0, certfile=files.certfile, keyfile=files.keyfile))
    assert str(raised.value).startswith(expected_message(case, files))


# The command line says what load_tls_context says (above, case by case), in one line;
# a few cases, in one process and under a supervisor, show that it does.
@pytest.mark.parametrize("workers", [1, 2], ids=["one process", "--workers 2"])
@pytest.mark.parametrize("case", ["certfile missing", "swapped", "key of another certificate"])
async def test_an_unusable_certificate_is_one_line_naming_the_file_and_what_is_wrong(
    case: str,
    workers: int,
    ca: trustme.CA,
    tmp_path: Path,
    shared_leaf: tuple[str, str],
    redis_url: str,
    prefix: str,
) -> None:
    files = case_files(case, ca, tmp_path, shared_leaf)
    flags = ["--certfile", files.certfile, "--keyfile", files.keyfile]
    if workers > 1:
        flags += ["--workers", str(workers), "--backplane", redis_url, "--backplane-prefix", prefix]
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-m", "trio_wsproxy", "serve", "--port", "0", *flags],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == b""  # never listened
    [line] = result.stderr.decode().splitlines()  # one line: no traceback, no worker's own
    assert line.startswith("trio-wsproxy: cannot serve: " + expected_message(case, files)), line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_certificate_says_why(shared_leaf: tuple[str, str]) -> None:
    certfile = Path(shared_leaf[0])
    certfile.chmod(0)
    result = subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "serve", "--port", "0",
         "--certfile", str(certfile), "--keyfile", shared_leaf[1]],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"trio-wsproxy: cannot serve: cannot read certfile {str(certfile)!r}: Permission denied"
    ]


@pytest.mark.parametrize(
    "case", ["certfile missing", "swapped", "key of another certificate", "key encrypted (PKCS #8)"]
)
async def test_python_callers_get_a_tls_config_error_naming_the_file(
    case: str, ca: trustme.CA, tmp_path: Path, shared_leaf: tuple[str, str]
) -> None:
    files = case_files(case, ca, tmp_path, shared_leaf)
    config = RelayConfig(port=0, certfile=files.certfile, keyfile=files.keyfile)
    with pytest.raises(TLSConfigError) as raised:
        async with open_relay(config):
            raise AssertionError("the relay started")
    error = raised.value
    assert isinstance(error, OSError)  # what a file problem always was
    assert str(error).startswith(expected_message(case, files))
    at_fault = files.certfile if case in ("certfile missing", "swapped") else files.keyfile
    assert error.path == at_fault
    assert trio_wsproxy.TLSConfigError is TLSConfigError


def test_a_certificate_and_its_key_load(shared_leaf: tuple[str, str]) -> None:
    certfile, keyfile = shared_leaf
    context = load_tls_context(RelayConfig(certfile=certfile, keyfile=keyfile))
    assert isinstance(context, ssl.SSLContext)
    assert load_tls_context(RelayConfig()) is None  # no TLS, nothing loaded
