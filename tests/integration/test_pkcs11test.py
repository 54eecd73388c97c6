# SPDX-License-Identifier: Apache-2.0
"""pkcs11test (google/pkcs11test, a PKCS#11 conformance suite we did not write) against the module,
in both release modes (pkcs11_release = first-use and login), against the local ITA/KBS stack.

The suite comes from ../shared/third_party/pkcs11test-*.tar.gz next to the clone (skipped with a
message when it is absent). It is built once per tarball into the cache,
${KEYGATE_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/keygate}/pkcs11test-<sha256 of the tarball>, in a
temporary directory renamed into place (so a half-built tree is never used).

No test may crash the run (a signal, or no XML report, fails). Every failing test must be listed
in pkcs11test-expected.txt with its reason; an unlisted failure fails, and so does a listed one
that now passes (the list stays honest)."""
import fnmatch
import hashlib
import os
import pathlib
import shutil
import tarfile
import tempfile
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO, run
from kglib import asan_env, kbs_stack, module_stack, module_token, token  # noqa: F401 (fixtures)

THIRD_PARTY = REPO.parent / "shared" / "third_party"
EXPECTED = pathlib.Path(__file__).with_name("pkcs11test-expected.txt")
MODES = ["first-use", "login"]


def tarball():
    found = sorted(THIRD_PARTY.glob("pkcs11test-*.tar.gz"))
    return found[-1] if found else None


def cache_root():
    base = os.environ.get("KEYGATE_CACHE_DIR")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "keygate")
    return pathlib.Path(base)


@pytest.fixture(scope="session")
def pkcs11test():
    """The pkcs11test binary, built from the tarball once and cached outside the clone."""
    tar = tarball()
    if tar is None:
        pytest.skip(f"pkcs11test sources absent: no {THIRD_PARTY}/pkcs11test-*.tar.gz (see its README)")
    if not shutil.which("make") or not shutil.which("g++"):
        pytest.skip("make and g++ are needed to build pkcs11test")
    digest = hashlib.sha256(tar.read_bytes()).hexdigest()
    root = cache_root()
    final = root / f"pkcs11test-{digest}"
    if not (final / "pkcs11test").exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=".pkcs11test-", dir=root))
        try:
            with tarfile.open(tar) as t:  # the "data" filter where this Python has it (3.11.4+)
                t.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            src = next(p.parent for p in tmp.glob("*/makefile"))
            r = run(["make", "-C", str(src), "-j2", "pkcs11test"], timeout=900)
            assert r.returncode == 0, f"building pkcs11test failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
            shutil.copy2(src / "pkcs11test", tmp / "pkcs11test")
            shutil.rmtree(src)
            try:
                os.rename(tmp, final)  # atomic; another run may have won the race
            except OSError:
                if not (final / "pkcs11test").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "pkcs11test"


def expected_failures(mode):
    """[(pattern, reason)] of pkcs11test-expected.txt for mode: "MODE PATTERN REASON" lines, MODE
    one of MODES or "*" (both), PATTERN a gtest name with fnmatch wildcards."""
    out = []
    for n, line in enumerate(EXPECTED.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        assert len(parts) == 3 and parts[0] in MODES + ["*"], f"{EXPECTED.name}:{n}: want MODE PATTERN REASON"
        if parts[0] in ("*", mode):
            out.append((parts[1], parts[2]))
    return out


def run_pkcs11test(binary, module, env, report):
    """Runs the suite (slot 1, no SO tests, the empty PIN of the protected authentication path);
    returns the CompletedProcess and {test: failure text or None}."""
    cmd = [str(binary), "-m", os.path.basename(module), "-l", os.path.dirname(module), "-s", "1", "-X", "-u", "",
           f"--gtest_output=xml:{report}"]
    r = run(cmd, env=env, timeout=600)
    results = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            if case.get("status") != "run":  # DISABLED_ tests
                continue
            failures = [f.get("message", "") for f in case.findall("failure")]
            results[f"{case.get('classname')}.{case.get('name')}"] = "\n".join(failures) if failures else None
    return r, results


@pytest.mark.parametrize("mode", MODES)
def test_pkcs11test_only_expected_failures(pkcs11test, token, kbs_stack, tmp_path, mode):
    conf = token.write_conf(f"pkcs11test-{mode}.conf", f"pkcs11_release = {mode}\n")
    env = dict(asan_env(), KEYGATE_CONF=str(conf))
    r, results = run_pkcs11test(pkcs11test, token.module, env, tmp_path / "report.xml")
    assert r.returncode >= 0, f"pkcs11test died of signal {-r.returncode}:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    assert results, f"pkcs11test wrote no report (rc={r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    expected = expected_failures(mode)
    failed = {test for test, failure in results.items() if failure is not None}
    unexpected = {t: results[t] for t in sorted(failed) if not any(fnmatch.fnmatchcase(t, p) for p, _ in expected)}
    assert not unexpected, f"{mode}: failures not in {EXPECTED.name}:\n" + "\n".join(
        f"{test}: {text[:600]}" for test, text in unexpected.items())
    print(f"pkcs11test, {mode}: {len(results)} tests run, {len(results) - len(failed)} passed, "
          f"{len(failed)} failed as listed")
    for pattern, reason in expected:
        matched = [t for t in results if fnmatch.fnmatchcase(t, pattern)]
        assert matched, f"{mode}: {EXPECTED.name} entry {pattern} matches no test that ran (renamed?)"
        now_pass = sorted(t for t in matched if t not in failed)
        assert not now_pass, f"{mode}: {pattern} ({reason}) is listed as failing, these pass now: {now_pass}"
