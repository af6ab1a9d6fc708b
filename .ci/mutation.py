"""Run mutmut one module at a time and print the score per module (called by .ci/mutation).

mutmut reads one [tool.mutmut] table from the pyproject.toml in its working folder, so each module of
[tool.mutmut.modules] gets its own folder .mutation/NAME/: a pyproject.toml holding the shared keys plus that module's
`only_mutate` and test selection, and links to imagen/ and tests/. mutmut copies both into .mutation/NAME/mutants/
and puts that folder first on sys.path, so the tests import the mutated copy (the editable install's finder comes
after the path finder). Results stay there, so a rerun only tests what changed and retests the last survivors.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutation"
# mutmut's exit codes (mutmut/stats.py); a timeout is a mutant stopped at its time limit (SIGXCPU), i.e. caught.
STATUS = {1: "killed", 3: "killed", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
          0: "survived", 33: "no tests", 5: "no tests", 34: "skipped", None: "not checked", -11: "segfault",
          -9: "segfault"}


def toml_value(value: object) -> str:
    # Strings, numbers, booleans and lists of them: JSON writes these as valid TOML.
    return json.dumps(value)


def prepare(name: str, spec: dict, config: dict) -> Path:
    folder = WORK / name
    folder.mkdir(parents=True, exist_ok=True)
    for link in ("imagen", "tests"):
        target = folder / link
        if not target.is_symlink():
            target.symlink_to(ROOT / link)
    shared = {k: v for k, v in config["tool"]["mutmut"].items() if k != "modules"}
    shared["only_mutate"] = spec["mutate"]
    # Tests named here before they are written are left out rather than failing the run.
    shared["pytest_add_cli_args_test_selection"] = [t for t in spec["tests"] if (ROOT / t).exists()]
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in config["tool"]["pytest"]["ini_options"].items()]
    lines += ["", "[tool.mutmut]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in shared.items()]
    (folder / "pyproject.toml").write_text("\n".join(lines) + "\n")
    sync_data_files(folder / "mutants")
    return folder


def sync_data_files(mutants: Path) -> None:
    """mutmut re-copies Python files on every run but other files (templates, rules) only once: refresh them."""
    if not mutants.is_dir():
        return
    for source in (ROOT / "imagen").rglob("*"):
        if source.is_dir() or source.suffix in (".py", ".pyc"):
            continue
        copy = mutants / source.relative_to(ROOT)
        if not copy.exists() or not filecmp.cmp(source, copy, shallow=False):
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)


def results(folder: Path, spec: dict) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for path in spec["mutate"]:
        meta = folder / "mutants" / (path + ".meta")
        if meta.exists():
            codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def mutmut(folder: Path, args: list[str], log) -> int:
    command = [str(ROOT / ".venv/bin/mutmut"), *args]
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    done = subprocess.run(command, cwd=folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return done.returncode


def run_module(name: str, spec: dict, config: dict, max_children: int) -> dict[str, int | None]:
    folder = prepare(name, spec, config)
    # Cached survivors are not retested by a plain run: retest them once the module's tests have changed.
    tests_seen = folder / "tests.sha256"
    digest = hashlib.sha256(b"".join((ROOT / t).read_bytes() for t in spec["tests"] if (ROOT / t).exists()))
    with open(folder / "run.log", "a") as log:
        survivors = [k for k, v in results(folder, spec).items() if v in (0, 33, 5)]
        code = mutmut(folder, ["run", "--max-children", str(max_children)], log)
        if code == 0 and survivors and (not tests_seen.exists() or tests_seen.read_text() != digest.hexdigest()):
            code = mutmut(folder, ["run", "--max-children", str(max_children), *survivors], log)
        if code == 0:
            tests_seen.write_text(digest.hexdigest())
    if code != 0:
        print(f"{name}: mutmut exited {code}; see {folder / 'run.log'}", file=sys.stderr)
    return results(folder, spec)


def write_survivors(name: str, codes: dict[str, int | None]) -> None:
    folder = WORK / name
    with open(folder / "survivors.txt", "w") as out:
        for key, value in sorted(codes.items()):
            if STATUS.get(value, "suspicious") not in ("killed", "timeout", "not checked"):
                diff = subprocess.run([str(ROOT / ".venv/bin/mutmut"), "show", key], cwd=folder, capture_output=True,
                                      text=True, stdin=subprocess.DEVNULL).stdout
                out.write(diff + "\n")


def report(name: str, spec: dict, codes: dict[str, int | None]) -> tuple[int, int]:
    counts: dict[str, int] = {}
    for value in codes.values():
        status = STATUS.get(value, "suspicious")
        counts[status] = counts.get(status, 0) + 1
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    total = len(codes)
    score = 100 * killed / total if total else 0.0
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"{name:<10} {score:5.1f}%  {killed}/{total} killed  ({detail})  {' '.join(spec['mutate'])}")
    for key, value in sorted(codes.items()):
        status = STATUS.get(value, "suspicious")
        if status not in ("killed", "timeout"):
            print(f"    {status}: {key}")
    return killed, total


def main() -> int:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    modules = config["tool"]["mutmut"]["modules"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"modules to run (default all): {', '.join(modules)}")
    parser.add_argument("--report", action="store_true", help="print the last results without running mutmut")
    parser.add_argument("--max-children", type=int, default=int(os.environ.get("MUTATION_MAX_CHILDREN", "2")))
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in modules]
    if unknown:
        parser.error(f"unknown module {', '.join(unknown)}; known: {', '.join(modules)}")
    killed_all = total_all = 0
    scores = []
    for name in args.names or list(modules):
        spec = modules[name]
        codes = results(WORK / name, spec) if args.report else run_module(name, spec, config, args.max_children)
        if codes:
            write_survivors(name, codes)
        scores.append((name, spec, codes))
    print()
    for name, spec, codes in scores:
        killed, total = report(name, spec, codes)
        killed_all += killed
        total_all += total
    if total_all:
        print(f"{'all':<10} {100 * killed_all / total_all:5.1f}%  {killed_all}/{total_all} killed")
    print(f"Diffs of the survivors: {WORK}/NAME/survivors.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
