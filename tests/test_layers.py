"""The package's layers (DESIGN.md §5) hold: import-linter checks the contracts in
pyproject.toml, TYPE_CHECKING imports counted, so a change that breaks one fails here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]

CONTRACTS = (
    "Layers: the top, then backplane/, relay/, protocol/",
    "The client is built on protocol/ only",
    "Sans-I/O modules (protocol/, backplane/order.py) import no trio, no sockets",
    "No import cycles among siblings, in any package",
)


def test_every_layer_contract_is_declared_and_kept(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    status = lint_imports(config_filename=os.fspath(ROOT / "pyproject.toml"), no_cache=True)
    report = capsys.readouterr().out
    for contract in CONTRACTS:
        assert f"{contract} KEPT" in report
    assert "BROKEN" not in report
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in report
    assert status == 0
