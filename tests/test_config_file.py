"""The config file (``--config relay.toml``) and namespaces (DESIGN.md §9;
docs/relay.md, "The config file"): every flag a key, namespaces its tables, flags over
the file, errors that name the key and the line; each namespace's policy over real
sockets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from httpapi import KEY, call
from test_v1 import V1_OFFER, next_event, next_message, v1_member
from test_v1_groups import join
from trio_wsproxy import (
    CloseCode,
    ConfigFileError,
    Namespace,
    Relay,
    RelayConfig,
    load_config,
    open_relay,
)
from trio_wsproxy._cli import build_parser, config_from_args
from trio_wsproxy.protocol import v1
from wsraw import OP_BINARY, OP_TEXT, RawClient

FILE = """\
port = 9999
max_message_size = "1MiB"
mailbox_bytes = 65536
ping_interval = "none"
slow_member_timeout = 2
allowed_origins = ["https://chat.example.com"]
shared_poller = false

[namespaces.game]
prefix = "game-"
max_group_members = 4
history_size = 50
join_hook = "http://127.0.0.1:8000/join"
publish_hook = "http://127.0.0.1:8000/move"
hook_failure = "allow"

[namespaces.news]
prefix = "news:"
publish = "backend"
presence = false
compression = "none"
"""


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text, "utf-8")
    return path


def test_a_file_sets_every_kind_of_setting_and_namespaces(tmp_path: Path) -> None:
    config = load_config(written(tmp_path, FILE))
    assert config == RelayConfig(
        port=9999,
        max_message_size=1 << 20,
        mailbox_bytes=65536,
        ping_interval=None,
        slow_member_timeout=2.0,
        allowed_origins=("https://chat.example.com",),
        shared_poller=False,
        namespaces=(
            Namespace(
                name="game",
                prefix="game-",
                max_group_members=4,
                history_size=50,
                join_hook="http://127.0.0.1:8000/join",
                publish_hook="http://127.0.0.1:8000/move",
                hook_failure="allow",
            ),
            Namespace(
                name="news", prefix="news:", publish="backend", presence=False, compression=0
            ),
        ),
    )
    # The Python API's keywords override the file, as flags do.
    assert load_config(written(tmp_path, FILE), port=0).port == 0
    assert config.namespace("game-7") == config.namespaces[0]
    assert config.namespace("news:today") == config.namespaces[1]
    assert config.namespace("lobby") is None
    assert config.compression_for("news:today") is None  # ("none": never there)
    assert config.compression_for("lobby") == config.compression
    assert config.hook_for("publish", "game-7") == ("http://127.0.0.1:8000/move", True)


def test_flags_given_override_the_file_and_the_others_keep_its_values(tmp_path: Path) -> None:
    path = written(tmp_path, FILE)
    argv = ["serve", "--config", str(path), "--port", "7000", "--shared-poller"]
    args = build_parser().parse_args(argv)
    given = set(vars(build_parser(defaults=False).parse_args(argv)))
    config = config_from_args(args, environ={}, given=given)
    assert (config.port, config.shared_poller) == (7000, True)
    assert (config.mailbox_bytes, config.ping_interval) == (65536, None)
    assert len(config.namespaces) == 2


def test_print_config_shows_the_effective_settings_and_reads_back_the_same(
    tmp_path: Path,
) -> None:
    path = written(tmp_path, FILE)
    command = [sys.executable, "-m", "trio_wsproxy", "serve", "--config", str(path)]
    env = {"TRIO_WSPROXY_API_KEY": "an-api-key-of-some-length-0123", "PATH": "/usr/bin:/bin"}
    printed = subprocess.run(
        [*command, "--port", "7000", "--print-config"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    ).stdout
    assert "port = 7000" in printed and "mailbox_bytes = 65536" in printed
    assert "[namespaces.news]" in printed and 'publish = "backend"' in printed
    # A secret is said to be set, never shown.
    assert "# api_key: set" in printed and "an-api-key" not in printed
    again = written(tmp_path, printed)
    assert load_config(again, api_key="an-api-key-of-some-length-0123") == load_config(
        path, port=7000, api_key="an-api-key-of-some-length-0123"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = 1\nmailbox_byte = 100\n", ":2: mailbox_byte: unknown key 'mailbox_byte' "
         "(did you mean 'mailbox_bytes'?)"),
        ("demo = 1\n", ":1: demo: expected true or false, got 1"),
        ("port = 1.5\n", ":1: port: expected a whole number, got 1.5"),
        ('mailbox_bytes = "lots"\n', ":1: mailbox_bytes: not a size in bytes: 'lots'"),
        ("port = 99999\n", ":1: port must be a TCP port from 0 to 65535"),
        ('token_secret = "x"\n', ":1: token_secret: unknown key 'token_secret' "
         "(did you mean 'token_secret_file'?)"),
        ("\n[namespaces.game]\nmax_group_members = 4\n",
         ":2: [namespaces.game]: a namespace needs a prefix"),
        ('[namespaces.game]\nprefix = "g"\nmax_members = 4\n',
         ":3: [namespaces.game] max_members: unknown key 'max_members'"),
        ('[namespaces.game]\nprefix = "g"\nmax_group_members = "four"\n',
         ":3: [namespaces.game] max_group_members: expected a whole number, got 'four'"),
        ('[namespaces.game]\nprefix = "g"\nhistory_size = -1\n',
         ":3: [namespaces.game] history_size: history_size must be a whole number (0: none)"),
        ('[namespaces.game]\nprefix = "g"\njoin_hook = "ftp://x"\n',
         ":3: [namespaces.game] join_hook: join_hook must be an http:// or https:// URL"),
        ('[namespaces.game]\nprefix = "g"\nhook_failure = "maybe"\n',
         ':3: [namespaces.game] hook_failure: hook_failure must be "refuse" or "allow"'),
        ('publish_hook = "nope"\n', ":1: publish_hook must be an http:// or https:// URL"),
        ('[namespaces.a]\nprefix = "g"\n[namespaces.b]\nprefix = "g"\n',
         "namespaces 'a' and 'b' have one prefix, 'g'"),
        ('[namespaces.a]\nprefix = "g"\npublish = "all"\n',
         ':3: [namespaces.a] publish: publish must be "members" or "backend"'),
        ("port = \n", "not TOML"),
    ],
)  # fmt: skip
def test_a_bad_file_is_a_start_up_error_naming_the_key_and_its_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = written(tmp_path, text)
    with pytest.raises(ConfigFileError) as raised:
        load_config(path)
    assert str(raised.value).startswith(str(path)) and message in str(raised.value)
    # On the command line: a usage error (status 2) with the same words.
    done = subprocess.run(
        [sys.executable, "-m", "trio_wsproxy", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and message in done.stderr


NAMESPACES = (
    Namespace(name="game", prefix="game-", max_group_members=2),
    Namespace(name="news", prefix="news:", publish="backend", presence=False),
    Namespace(name="big", prefix="big-", presence_limit=1),
)


@pytest.mark.wsproxy_relay(namespaces=NAMESPACES, max_group_members=10)
async def test_a_namespaces_member_limit_holds_for_its_groups_only(relay: Relay) -> None:
    with trio.fail_after(10):
        players = [
            await RawClient.open(relay.port, f"/ws?id=p{n}&groupName=game-1") for n in (1, 2)
        ]
        await relay.wait_members(2, "game-1")
        third = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
        status, _, body = await third.handshake("/ws?id=p3&groupName=game-1")
        assert (status, body.strip()) == (503, b"group full: 2 members")
        # A v1 member's join is refused with the same words, and it stays connected.
        watcher, _ = await v1_member(relay, "watcher", group="lobby")
        refused = await join(watcher, "game-1")
        assert refused == v1.Error(v1.GROUP_FULL, "group full: 2 members", group="game-1")
        # Outside the namespace, the relay's limit.
        crowd = [await RawClient.open(relay.port, f"/ws?id=c{n}&groupName=lobby") for n in range(5)]
        await relay.wait_members(6, "lobby")
    for client in (*players, third, watcher, *crowd):
        await client.aclose()


@pytest.mark.wsproxy_relay(namespaces=NAMESPACES, api_key=KEY)
async def test_in_a_back_end_only_namespace_members_cannot_publish_and_are_told(
    relay: Relay,
) -> None:
    with trio.fail_after(10):
        reader, welcome = await v1_member(relay, "reader", group="news:today")
        # Presence off: the count only, and no events as others come and go.
        assert welcome == v1.Welcome("reader", "news:today", None, 1)
        writer, _ = await v1_member(relay, "writer", group="news:today")
        await writer.send_frame(OP_TEXT, b"\nmy own news")
        error = await next_event(writer)
        assert isinstance(error, v1.Error) and error.error == v1.READ_ONLY
        assert "only the application's back end publishes" in error.detail
        await writer.send_frame(OP_TEXT, b'{"to":"reader"}\nwhisper')
        error = await next_event(writer)
        assert isinstance(error, v1.Error) and error.error == v1.READ_ONLY
        # The back end posts; every member gets it (the writer stayed connected).
        answer = await call(
            relay.port, "POST", "/api/groups/news:today/messages", b"headline",
            {"Content-Type": "text/plain"},
        )  # fmt: skip
        assert answer.json == {"recipients": 2}
        for member in (reader, writer):
            assert await next_message(member) == (OP_TEXT, v1.From(None), b"headline")
        # A plain member has no events to be told by: it is closed, with the reason.
        plain = await RawClient.open(relay.port, "/ws?id=plain&groupName=news:today")
        await relay.wait_members(3, "news:today")
        await plain.send_frame(OP_BINARY, b"\x00")
        code, reason = await plain.expect_close()
        assert code == CloseCode.POLICY_VIOLATION
        assert reason == "only the application's back end publishes in this group"
        # A member of a group outside the namespace publishes as ever.
        other, _ = await v1_member(relay, "other", group="lobby")
        assert isinstance(await join(reader, "lobby"), v1.Welcome)
        await other.send_frame(OP_TEXT, b"\nhello")
        assert await next_message(reader) == (
            OP_TEXT,
            v1.From("other", group="lobby"),
            b"hello",
        )
    for client in (reader, writer, plain, other):
        await client.aclose()


@pytest.mark.wsproxy_relay(namespaces=NAMESPACES)
async def test_a_namespaces_presence_limit_is_its_groups(relay: Relay) -> None:
    with trio.fail_after(10):
        first, welcome = await v1_member(relay, "first", group="big-1")
        assert welcome.members == frozenset({"first"})
        second, welcome = await v1_member(relay, "second", group="big-1")
        assert (welcome.members, welcome.count) == (None, 2)  # over its limit of 1
        event = await next_event(first)
        assert event == v1.Members(None, 2)
        # Elsewhere, the relay's limit (1,000): lists.
        third, welcome = await v1_member(relay, "third", group="lobby")
        fourth, welcome = await v1_member(relay, "fourth", group="lobby")
        assert welcome.members == frozenset({"third", "fourth"})
    for client in (first, second, third, fourth):
        await client.aclose()


async def test_a_relay_runs_with_namespaces_from_a_file(tmp_path: Path) -> None:
    config = load_config(written(tmp_path, FILE), port=0, host="127.0.0.1")
    async with open_relay(config) as relay:
        with trio.fail_after(10):
            client = RawClient(await trio.open_tcp_stream("127.0.0.1", relay.port))
            status, _, _ = await client.handshake("/ws?id=a&groupName=news:1", V1_OFFER)
            assert status == 101
            welcome = await next_event(client)
            assert isinstance(welcome, v1.Welcome) and welcome.members is None
            await client.aclose()
