# SPDX-License-Identifier: Apache-2.0
"""docs/security-model.md's threat table names the tests that prove each defence: every name it
gives must exist (a pytest function in tests/, a cmocka case in tests/unit, a fault-matrix row or
a file), so the table cannot point at a test that was renamed or removed."""
import re

from conftest import REPO


def table_rows():
    text = (REPO / "docs" / "security-model.md").read_text()
    section = text.split("## Threats, defences and the tests that prove them", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")][1:]


def test_every_test_named_in_the_threat_table_exists():
    sources = "\n".join(p.read_text(errors="replace") for p in (REPO / "tests").rglob("*")
                        if p.is_file() and p.suffix in (".py", ".c"))
    # the fault matrix's rows, as its generated table in docs/robustness.md names them
    robustness = (REPO / "docs" / "robustness.md").read_text()
    faults = robustness.split("<!-- fault-matrix:begin -->", 1)[1].split("<!-- fault-matrix:end -->", 1)[0]
    rows = table_rows()
    assert len(rows) >= 20
    missing = []
    for row in rows:
        proof = row.rstrip(" |").rsplit(" | ", 1)[1]
        assert "`" in proof, row  # every defence names its proof
        for name in re.findall(r"`([^`]+)`", proof):
            if name.endswith((".py", ".c")):
                found = any(True for _ in REPO.rglob(name))
            elif name.startswith("token_") or name.startswith("kbs_"):
                found = f"| `{name}` |" in faults or f"def {name}(" in sources
            elif re.fullmatch(r"[a-z0-9_]+", name):
                found = re.search(rf"\b(def {name}\(|static void {name}\(|{name}\b)", sources) is not None
            else:
                continue  # a value or a file name in prose (e.g. `CKA_VALUE`, `login`)
            if not found:
                missing.append(name)
    assert not missing, missing
