"""The webhooks' settings: a URL needs a secret (from a file or the environment, never a
flag), the file's whitespace is stripped, --print-config masks the secret, the config
file takes the same keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trio_wsproxy import RelayConfig
from trio_wsproxy._serve import read_webhook_secret
from trio_wsproxy.config_file import load_config
from webhookserver import SECRET

URL = "http://127.0.0.1:9/webhooks"


def serve(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_WSPROXY_")}
    return subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "serve", "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=30,
        env={**environment, **(env or {})},
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if ": error: " in line]
    return line


def test_a_webhook_url_without_a_secret_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="webhook_url needs a secret"):
        RelayConfig(webhook_url=URL)
    line = error_line(serve("--webhook-url", URL))
    assert "--webhook-url needs a secret" in line
    assert "--webhook-secret-file" in line and "TRIO_WSPROXY_WEBHOOK_SECRET" in line


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hooks", "http:///path"])
def test_a_webhook_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="must be an http:// or https:// URL"):
        RelayConfig(webhook_url=url, webhook_secret=SECRET)
    line = error_line(serve("--webhook-url", url, env={"TRIO_WSPROXY_WEBHOOK_SECRET": SECRET}))
    assert "--webhook-url must be an http:// or https:// URL" in line


def test_the_secret_is_given_once(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    with pytest.raises(ValueError, match="give the webhook secret once"):
        RelayConfig(webhook_url=URL, webhook_secret=SECRET, webhook_secret_file=str(secret_file))


def test_a_secret_file_s_surrounding_whitespace_is_stripped(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"  {SECRET}\n\n")
    config = RelayConfig(webhook_url=URL, webhook_secret_file=str(secret_file))
    assert read_webhook_secret(config) == SECRET
    assert read_webhook_secret(RelayConfig(webhook_url=URL, webhook_secret=SECRET)) == SECRET
    assert read_webhook_secret(RelayConfig()) is None


def test_an_empty_or_missing_secret_file_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    for path, words in ((empty, "is empty"), (tmp_path / "missing", "No such file")):
        line = error_line(serve("--webhook-url", URL, "--webhook-secret-file", str(path)))
        assert "--webhook-secret-file" in line and words in line


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--webhook-interval", "0", "--webhook-interval must be positive"),
        ("--webhook-queue", "0", "--webhook-queue must be positive"),
        ("--webhook-timeout", "-1", "--webhook-timeout must be positive"),
    ],
)
def test_the_batching_settings_must_be_positive(flag: str, value: str, says: str) -> None:
    line = error_line(serve(flag, value))
    assert says in line


def test_print_config_masks_the_secret_and_shows_the_rest() -> None:
    result = serve(
        "--webhook-url", URL, "--webhook-interval", "0.25", "--print-config",
        env={"TRIO_WSPROXY_WEBHOOK_SECRET": SECRET},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = result.stdout
    assert f'webhook_url = "{URL}"' in printed
    assert "webhook_interval = 0.25" in printed
    assert "# webhook_secret: set" in printed
    assert SECRET not in printed


def test_the_config_file_takes_the_webhook_keys_but_never_the_secret(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    path = tmp_path / "relay.toml"
    path.write_text(
        f'webhook_url = "{URL}"\nwebhook_secret_file = "{secret_file}"\n'
        "webhook_interval = 0.2\nwebhook_queue = 500\nwebhook_timeout = 2.5\n"
    )
    config = load_config(path)
    assert (config.webhook_url, config.webhook_interval) == (URL, 0.2)
    assert (config.webhook_queue, config.webhook_timeout) == (500, 2.5)
    assert read_webhook_secret(config) == SECRET
    path.write_text(f'webhook_url = "{URL}"\nwebhook_secret = "{SECRET}"\n')
    line = error_line(serve("--config", str(path)))
    assert ":2: webhook_secret: unknown key 'webhook_secret'" in line
    assert SECRET not in line
