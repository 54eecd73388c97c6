# SPDX-License-Identifier: Apache-2.0
"""The repository stands on its own: no tracked file refers to a path outside the tree (except
the optional third-party legs under ../shared/third_party, which skip when absent), every
relative link in the Markdown files resolves, the README is an index whose topic pages exist,
every keygate.conf key is documented exactly once (docs/configuration.md's generated table),
tests/vectors/README.md indexes exactly the vectors with their SHA-256, and every source file we
own carries its SPDX license line."""
import hashlib
import importlib.util
import pathlib
import re
import subprocess

import pytest

from conftest import REPO

# Paths that only exist on a developer's machine, and the notes that lived beside the tree
# before docs/protocols/ and docs/design.md replaced them.
OUTSIDE = [
    (re.compile(r"\.\./shared(?!/third_party\b)"), "../shared (only ../shared/third_party is allowed)"),
    (re.compile(r"/work/"), "/work/"),
    (re.compile(r"shared/(vectors|specs)\b"), "shared/vectors or shared/specs"),
    (re.compile(r"""["']shared["']\s*/\s*["'](vectors|specs)["']"""), "a path joined to the vectors or specs outside the tree"),
    (re.compile(r"/home/[A-Za-z0-9_.-]+"), "a home directory"),
    (re.compile(r"(?<![\w.])/root/"), "root's home directory"),
    (re.compile(r"\b(kbs-protocols|openssl-provider-notes|pkcs11-notes|environment)\.md\b"),
     "a note that is not in the tree (see docs/protocols/)"),
]
DESIGN_NOTE = re.compile(r"\bDESIGN\.md\b")
MD_NAME = re.compile(r"[\w.-]+\.md\b")
MD_PLACEHOLDERS = {"PAGE.md"}  # scripts/gen-man.py's usage text: docs/man/PAGE.md
# data, not text we write: fuzz inputs and the real artefacts (checked by their own tests)
DATA_DIRS = ("tests/fuzz/corpus/", "tests/vectors/")
SELF = "tests/integration/test_repository.py"  # the patterns above name what they forbid

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\[[^\]]+\]:\s*(\S+)", re.M)

SPDX_HASH = "# SPDX-License-Identifier: Apache-2.0"
SPDX_C = "/* SPDX-License-Identifier: Apache-2.0 */"
HASH_SUFFIXES = (".py", ".sh", ".cmake", ".pc.in")
C_SUFFIXES = (".c", ".h", ".h.in", ".map")


def tracked():
    r = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout: the repository checks need `git ls-files`")
    return [f for f in r.stdout.decode().split("\0") if f]


def text_of(path):
    data = (REPO / path).read_bytes()
    if b"\0" in data:
        return None  # binary (plots, DER, quotes)
    return data.decode("utf-8", "replace")


def test_no_file_refers_to_a_path_outside_the_tree():
    files = tracked()
    names = {pathlib.Path(f).name for f in files}
    hits = []
    for f in files:
        if f.startswith(DATA_DIRS[0]) or f == SELF:
            continue
        text = text_of(f)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for pattern, what in OUTSIDE:
                if pattern.search(line):
                    hits.append(f"{f}:{n}: {what}: {line.strip()[:120]}")
            if not f.startswith("docs/") and DESIGN_NOTE.search(line):
                hits.append(f"{f}:{n}: DESIGN.md is docs/design.md now: {line.strip()[:120]}")
            if not f.endswith(".md"):
                # a source file that names a note must name one the tree has
                for m in MD_NAME.finditer(line):
                    if m.group(0) not in names and m.group(0) not in MD_PLACEHOLDERS:
                        hits.append(f"{f}:{n}: {m.group(0)} is not in the tree: {line.strip()[:120]}")
    assert not hits, "\n".join(hits)


def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading."""
    s = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path):
    text = path.read_text()
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    found = set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        a = github_anchor(m.group(1))
        n = 1
        base = a
        while a in found:
            a = f"{base}-{n}"
            n += 1
        found.add(a)
    return found


def test_every_relative_link_in_the_markdown_resolves():
    files = tracked()
    tracked_set = set(files)
    tracked_dirs = {str(p) for f in files for p in pathlib.PurePosixPath(f).parents}
    bad = []
    for f in files:
        if not f.endswith(".md") or f.startswith(DATA_DIRS[0]):
            continue
        src = REPO / f
        text = re.sub(r"^```.*?^```", "", src.read_text(), flags=re.S | re.M)
        text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
        for m in LINK.finditer(text):
            target = m.group(1) or m.group(2)
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            dest = (src.parent / path).resolve() if path else src.resolve()
            try:
                rel = dest.relative_to(REPO.resolve()).as_posix()
            except ValueError:
                bad.append(f"{f}: {target}: outside the repository")
                continue
            if rel not in tracked_set and rel not in tracked_dirs:
                bad.append(f"{f}: {target}: no such tracked file or directory ({rel})")
                continue
            if anchor and rel.endswith(".md") and anchor not in anchors(dest):
                bad.append(f"{f}: {target}: no heading with anchor #{anchor} in {rel}")
    assert not bad, "\n".join(bad)


def test_the_readme_links_every_topic_page_and_stays_an_index():
    """README.md is the index: short, and every page of docs/ (and the man page sources) is one
    link away from it, so that nothing documented can only be found by searching the tree."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "README.md is an index: move details into docs/"
    # the exact section .ci/run and CONTRIBUTING.md rely on
    assert "## The two commands" in readme
    assert "./scripts/demo.sh" in readme and "./scripts/test.sh" in readme
    linked = {m.group(1) or m.group(2) for m in LINK.finditer(readme)}
    linked = {target.partition("#")[0] for target in linked}
    pages = [f for f in tracked() if f.startswith("docs/") and f.endswith(".md") and f.count("/") == 1]
    assert "docs/configuration.md" in pages and "docs/security-model.md" in pages
    missing = [f for f in pages if f not in linked]
    assert not missing, f"README.md does not link these docs pages: {missing}"
    for folder in ("docs/protocols/", "docs/man/", "bench/RESULTS.md", "CONTRIBUTING.md"):
        assert folder in linked, folder


def config_keys():
    """The keys of release/kg_config.c's kg_config_keys, in order, through scripts/config-table.py
    (the generator of the table), cross-checked against the number of rows of the C table."""
    spec = importlib.util.spec_from_file_location("config_table", REPO / "scripts" / "config-table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    src = (REPO / "release" / "kg_config.c").read_text()
    keys = [row[0] for row in mod.ROW.findall(src)]
    table = src[src.index("kg_config_keys[] = {"):]
    table = table[:table.index("\n};")]
    assert len(keys) == len(re.findall(r'^    \{"\w+", KG_CONF_T_', table, re.M)), \
        "scripts/config-table.py misses rows of kg_config_keys"
    return mod, keys


def test_every_config_key_is_documented_exactly_once():
    """Each key has one row in docs/configuration.md's generated table, the table is what the
    generator writes, and no other Markdown file (or that file outside its table) has a table row
    of its own for a key: a second description would drift from the first."""
    mod, keys = config_keys()
    assert len(keys) >= 40 and len(set(keys)) == len(keys)
    begin, end = "<!-- config-keys:begin -->\n", "<!-- config-keys:end -->"
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc.count(begin) == 1 and doc.count(end) == 1, "docs/configuration.md needs one pair of markers"
    generated = doc[doc.index(begin) + len(begin):doc.index(end)]
    assert generated == mod.table(), \
        "docs/configuration.md's key table is stale: run /usr/bin/python3 scripts/config-table.py --update"
    rows = re.findall(r"^\| `([a-z0-9_]+)` \|", generated, re.M)
    assert rows == keys, "the table must have one row per key, in kg_config_keys order"
    row_of_a_key = re.compile(r"^\s*\|\s*`(%s)`\s*\|" % "|".join(map(re.escape, keys)), re.M)
    others = []
    for f in tracked():
        if not f.endswith(".md") or f.startswith(DATA_DIRS):
            continue
        text = (REPO / f).read_text()
        if f == "docs/configuration.md":
            text = text.replace(generated, "")
        others += [f"{f}: {m.group(0).strip()}" for m in row_of_a_key.finditer(text)]
    assert not others, "config keys described in a table outside docs/configuration.md's generated table:\n" \
        + "\n".join(others)


def test_the_vectors_readme_indexes_every_vector_with_its_sha256():
    vdir = REPO / "tests" / "vectors"
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|", (vdir / "README.md").read_text(), re.M)
    listed = {name: (int(size), digest) for name, size, digest in rows}
    present = {p.name for p in vdir.iterdir() if p.name != "README.md"}
    assert present, "no vectors in tests/vectors"
    assert set(listed) == present, (sorted(present - set(listed)), sorted(set(listed) - present))
    for name, (size, digest) in listed.items():
        data = (vdir / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest), name


def spdx_kind(path):
    """'#' or 'c' for a source/build/script file we own, None for anything else."""
    p = pathlib.PurePosixPath(path)
    if path.startswith(DATA_DIRS) or path.startswith("tests/fuzz/data/"):
        return None
    if p.name == "CMakeLists.txt" or path.endswith(HASH_SUFFIXES):
        return "#"
    if path.endswith(C_SUFFIXES):
        return "c"
    if "." not in p.name:
        head = (REPO / path).read_bytes()[:2]
        if head == b"#!":
            return "#"  # bench/run, bench/soak-*, .ci/run, debian/rules, ...
    return None


def test_every_source_file_carries_the_spdx_line():
    missing = []
    checked = 0
    for f in tracked():
        kind = spdx_kind(f)
        if kind is None:
            continue
        checked += 1
        lines = (REPO / f).read_text().splitlines()
        if kind == "c":
            ok = lines[:1] == [SPDX_C]
        else:
            first = 1 if lines[:1] and lines[0].startswith("#!") else 0
            ok = lines[first:first + 1] == [SPDX_HASH]
        if not ok:
            missing.append(f)
    assert checked > 100, f"only {checked} source files found"
    assert not missing, f"{len(missing)} files without the SPDX line first: " + ", ".join(missing)


def test_the_license_is_the_apache_2_0_text():
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    copyright_ = (REPO / "debian" / "copyright").read_text()
    assert re.search(r"^Files: \*\n(?:.+\n)*?License: Apache-2\.0$", copyright_, re.M), copyright_


def test_test_modules_import_no_other_test_module():
    """Shared test code lives in tests/integration/kglib.py (and conftest.py, tests/stack): a test
    module never imports another test module (issue 18)."""
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(from\s+(tests\.\w+\.)?test_\w+\s+import|import\s+(tests\.\w+\.)?test_\w+)", line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders
