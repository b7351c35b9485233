"""The pure layers import no adapter library (STYLE.md 1): policy and config stay testable."""

from __future__ import annotations

import ast
from pathlib import Path

import bgpd

PACKAGE = Path(bgpd.__file__).parent
FORBIDDEN = {"kubernetes", "exabgp", "pyroute2", "socket", "subprocess", "urllib3",
             "bgpd.kube", "bgpd.speaker", "bgpd.kernel", "bgpd.agent", "bgpd.http"}
PURE = [PACKAGE / "config.py", PACKAGE / "model.py", PACKAGE / "values.py", *sorted((PACKAGE / "policy").glob("*.py"))]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_pure_modules_import_no_adapter():
    bad = {}
    for path in PURE:
        hits = {m for m in imported_modules(path)
                if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)}
        if hits:
            bad[path.name] = sorted(hits)
    assert not bad, f"pure modules import adapters: {bad}"


def test_the_check_sees_policy_files():
    assert len(PURE) >= 6
