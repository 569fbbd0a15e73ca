"""Access tokens: who may join which group, decided without any network."""

from __future__ import annotations

import subprocess
import sys
import time

import jwt
import pytest

from trio_wsproxy.protocol.tokens import allows, check_token, mint_token

SECRET = "a-secret-of-at-least-thirty-two-bytes!"


def test_a_minted_token_admits_its_id_to_its_groups() -> None:
    token = mint_token(SECRET, "alice", ["lobby", "game-*"], ttl=60)
    assert check_token(token, SECRET, "alice", "lobby") is None
    assert check_token(token, SECRET, "alice", "game-42") is None


@pytest.mark.parametrize(
    ("token_for", "member", "group", "status", "kind"),
    [
        (None, "alice", "lobby", 401, "token_missing"),
        ("garbage", "alice", "lobby", 401, "token_invalid"),
        ("other-secret", "alice", "lobby", 401, "token_invalid"),
        ("alice", "bob", "lobby", 403, "token_id"),
        ("alice", "alice", "kitchen", 403, "token_group"),
        ("alice", "alice", "game", 403, "token_group"),
    ],
)
def test_tokens_that_do_not_admit_say_why(
    token_for: str | None, member: str, group: str, status: int, kind: str
) -> None:
    if token_for is None:
        token = None
    elif token_for == "garbage":
        token = "not.a.jwt"
    elif token_for == "other-secret":
        token = mint_token("another-secret-of-thirty-two-bytes!!", "alice", ["lobby"], 60)
    else:
        token = mint_token(SECRET, token_for, ["lobby", "game-*"], ttl=60)
    refusal = check_token(token, SECRET, member, group)
    assert refusal is not None
    assert (refusal.status, refusal.kind) == (status, kind)
    assert SECRET not in refusal.reason and (token or "-") not in refusal.reason


def test_an_expired_token_is_401() -> None:
    token = mint_token(SECRET, "alice", ["lobby"], ttl=10, now=time.time() - 60)
    refusal = check_token(token, SECRET, "alice", "lobby")
    assert refusal is not None and (refusal.status, refusal.kind) == (401, "token_expired")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_only_hs256_is_accepted() -> None:
    claims = {"sub": "alice", "groups": ["lobby"], "exp": int(time.time()) + 60}
    token = jwt.encode(claims, SECRET, algorithm="HS512")
    refusal = check_token(token, SECRET, "alice", "lobby")
    assert refusal is not None and refusal.kind == "token_invalid"


def test_a_token_without_expiry_is_invalid() -> None:
    token = jwt.encode({"sub": "alice", "groups": ["lobby"]}, SECRET, algorithm="HS256")
    refusal = check_token(token, SECRET, "alice", "lobby")
    assert refusal is not None and refusal.kind == "token_invalid"


def test_group_patterns() -> None:
    assert allows(["lobby"], "lobby") and not allows(["lobby"], "lobby2")
    assert allows(["game-*"], "game-") and allows(["game-*"], "game-7")
    assert allows(["*"], "anything")
    assert not allows(["", 7, None], "x")


def test_minting_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        mint_token(SECRET, "", ["g"], 60)
    with pytest.raises(ValueError):
        mint_token(SECRET, "a", [], 60)
    with pytest.raises(ValueError):
        mint_token(SECRET, "a", ["g"], 0)
    with pytest.raises(ValueError):
        mint_token("", "a", ["g"], 60)


def test_pyjwt_is_imported_only_where_tokens_are_used() -> None:
    """A relay without tokens never loads PyJWT (nor cryptography, which PyJWT imports
    whenever it is installed: 10 MiB)."""
    script = (
        "import sys, trio_wsproxy._cli, trio_wsproxy;"
        "print('jwt' in sys.modules, 'cryptography' in sys.modules);"
        "trio_wsproxy.mint_token('x' * 32, 'a', ['g'], 60);"
        "print('jwt' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["False", "False", "True"]
