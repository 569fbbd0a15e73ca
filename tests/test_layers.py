"""The package's layers (DESIGN.md §5) hold: import-linter checks the contracts in
pyproject.toml, TYPE_CHECKING imports counted, so a change that breaks one fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONTRACTS = (
    "Layers: the top, then client/, backplane/, relay/, protocol/",
    "The client is built on protocol/ only",
    "Pure modules import no trio and no sockets",
    "No import cycles among siblings, in any package",
)
# In a process of its own: import-linter configures logging as it starts, which would
# silence the loggers of the package that the rest of the suite reads.
LINT = (
    "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
)


def test_every_layer_contract_is_declared_and_kept() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LINT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    report = result.stdout
    for contract in CONTRACTS:
        assert f"{contract} KEPT" in report, report
    assert "BROKEN" not in report
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in report
    assert result.returncode == 0, result.stderr
