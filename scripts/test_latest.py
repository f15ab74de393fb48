"""Nightly check (`make test-latest`, .github/workflows/nightly.yml): the fast tests against the
newest releases of the direct dependencies, and which upgrade broke what.

    python scripts/test_latest.py [--venv .venv-latest] [--out outputs/test-latest]
        [--pytest-args "-m 'not slow'"] [--pip-arg=--no-index ...]

1. A fresh virtual environment (``--venv``, never the project's ``.venv``) gets
   ``requirements.lock`` and the project (editable, no dependencies).
2. Every direct dependency (``[project] dependencies`` and every optional group of
   pyproject.toml, extras kept, pins dropped) is upgraded at once to the newest releases that
   fit together; pip's dry run of each name alone gives its newest release, so a dependency
   held back by another one is named.
3. The fast tests run (``--pytest-args``, default ``-m "not slow"``). If some fail:
4. the lock is installed again and the failing tests rerun (failing there too: not an
   upgrade's fault); then, from the lock, each upgraded dependency alone (with what it needs)
   and the failing tests once more: the upgrades that break them are named. A test that fails
   only with every upgrade together is reported as such.

Writes ``OUT/report.md`` (and prints it); exit code 0 when the tests pass on the newest
releases, 1 when some fail, 2 when the environment cannot be built (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
PIP_TIMEOUT = 3600
PYTEST_TIMEOUT = 3600
SUMMARY = re.compile(r"^(FAILED|ERROR) (\S+)", re.M)


class SetupError(Exception):
    """The environment could not be built; the message is the one line printed."""


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Requirement:
    name: str  # canonical
    spec: str  # the name as pip takes it, extras kept, version dropped


def direct_dependencies(pyproject: Path) -> list[Requirement]:
    """``[project] dependencies`` and every optional group, without their version pins."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        lines += group
    found: dict[str, Requirement] = {}
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?", line)
        if match:
            name = canonical(match[1])
            found.setdefault(name, Requirement(name, match[1] + (match[2] or "")))
    return list(found.values())


def read_lock(lock: Path) -> dict[str, str]:
    """``name==version`` lines of a lock file: canonical name -> version."""
    pins = {}
    for line in lock.read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            pins[canonical(name.split("[")[0])] = version.strip()
    return pins


@dataclass
class Env:
    """The separate virtual environment and how pip and pytest run in it."""

    venv: Path
    project: Path
    pip_args: list[str]
    pytest_args: list[str]
    log: Path

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def run(self, *command: str, timeout: float, check: bool = True) -> str:
        """Run a command in the project folder; output appended to the log."""
        with self.log.open("a") as log:
            log.write(f"\n$ {shlex.join(command)}\n")
            log.flush()
            try:
                result = subprocess.run(
                    command,
                    cwd=self.project,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=timeout,
                    env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
                )
            except subprocess.TimeoutExpired:
                shown = shlex.join(command[:4])
                raise SetupError(f"{shown} ...: no result in {timeout} s") from None
            log.write(result.stdout)
        if check and result.returncode != 0:
            last = (result.stdout.strip().splitlines() or ["failed"])[-1]
            raise SetupError(f"{shlex.join(command[:5])} ... failed: {last} (log: {self.log})")
        return result.stdout

    def pip(self, *args: str) -> str:
        return self.run(self.python, "-m", "pip", *args, *self.pip_args, timeout=PIP_TIMEOUT)

    def create(self) -> None:
        shutil.rmtree(self.venv, ignore_errors=True)
        self.run(sys.executable, "-m", "venv", str(self.venv), timeout=600)

    def install_lock(self) -> None:
        self.pip("install", "--quiet", "-r", str(self.project / "requirements.lock"))
        if "build-system" in tomllib.loads((self.project / "pyproject.toml").read_text()):
            self.pip("install", "--quiet", "--no-deps", "-e", str(self.project))

    def versions(self) -> dict[str, str]:
        listed = self.run(self.python, "-m", "pip", "list", "--format", "json", timeout=300)
        return {canonical(p["name"]): p["version"] for p in json.loads(listed)}

    def newest_releases(self, requirements: list[Requirement]) -> dict[str, str]:
        """Each name's newest release taken alone (pip's resolver, dry run)."""
        report = self.pip(
            "install",
            "--quiet",
            "--dry-run",
            "--no-deps",
            "--ignore-installed",
            "--report",
            "-",
            *(r.spec for r in requirements),
        )
        data, _ = json.JSONDecoder().raw_decode(report, report.index("{"))
        return {
            canonical(item["metadata"]["name"]): item["metadata"]["version"]
            for item in data["install"]
        }

    def failing_tests(self, only: list[str] | None = None) -> list[str]:
        """Node ids of the tests that fail or error (all selected tests, or ``only``)."""
        selection = only if only is not None else self.pytest_args
        out = self.run(
            self.python,
            "-m",
            "pytest",
            "-q",
            "-rfE",
            "-p",
            "no:cacheprovider",
            *selection,
            timeout=PYTEST_TIMEOUT,
            check=False,
        )
        failed = sorted({m[2] for m in SUMMARY.finditer(out)})
        if not failed and not re.search(r"\d+ passed|no tests ran", out):
            raise SetupError(f"pytest did not run (log: {self.log})")
        return failed


@dataclass
class Outcome:
    lock: dict[str, str]
    installed: dict[str, str]
    newest: dict[str, str]
    failing: list[str]
    on_lock: list[str] = field(default_factory=list)
    broken_by: dict[str, list[str]] = field(default_factory=dict)

    def upgraded(self, names: list[str]) -> list[str]:
        return [n for n in names if n in self.installed and self.installed[n] != self.lock.get(n)]

    def only_together(self) -> list[str]:
        single = {t for tests in self.broken_by.values() for t in tests}
        return [t for t in self.failing if t not in single and t not in self.on_lock]


def attribute(env: Env, outcome: Outcome, requirements: list[Requirement]) -> None:
    """Which upgrade alone breaks which of the failing tests (see the module docstring)."""
    env.install_lock()
    outcome.on_lock = env.failing_tests(outcome.failing)
    suspects = [t for t in outcome.failing if t not in outcome.on_lock]
    if not suspects:
        return
    for req in requirements:
        if req.name not in outcome.upgraded([req.name]):
            continue
        env.pip("install", "--quiet", f"{req.spec}=={outcome.installed[req.name]}")
        outcome.broken_by[req.name] = env.failing_tests(suspects)
        env.install_lock()


def report(outcome: Outcome, requirements: list[Requirement]) -> str:
    """Markdown: each direct dependency (lock, tested, newest release, verdict), then the
    failing tests by cause."""
    lines = [
        "| dependency | lock | tested | newest release | result |",
        "|---|---|---|---|---|",
    ]
    for req in requirements:
        lock, tested = outcome.lock.get(req.name, "-"), outcome.installed.get(req.name, "-")
        newest = outcome.newest.get(req.name, "?")
        if outcome.broken_by.get(req.name):
            result = f"breaks {len(outcome.broken_by[req.name])} test(s)"
        elif tested == lock:
            result = "up to date" if newest == lock else "held back by another dependency"
        else:
            result = "upgraded" if tested == newest else "upgraded, not to the newest"
        lines.append(f"| {req.spec} | {lock} | {tested} | {newest} | {result} |")
    lines.append("")
    if not outcome.failing:
        lines.append("All selected tests pass on the newest releases.")
        return "\n".join(lines)
    lines.append(f"{len(outcome.failing)} test(s) fail on the newest releases:")
    groups = [(f"broken by {n} {outcome.installed[n]}", t) for n, t in outcome.broken_by.items()]
    groups += [
        ("fail on the lock too (not an upgrade)", outcome.on_lock),
        ("fail only with several upgrades together", outcome.only_together()),
    ]
    for label, tests in groups:
        if tests:
            lines.append(f"\n{label}:")
            lines += [f"- `{t}`" for t in tests]
    return "\n".join(lines)


def run(env: Env) -> tuple[str, bool]:
    """The whole check; returns the report and whether the tests passed."""
    requirements = direct_dependencies(env.project / "pyproject.toml")
    lock = read_lock(env.project / "requirements.lock")
    env.create()
    env.install_lock()
    newest = env.newest_releases(requirements)
    env.pip("install", "--quiet", "--upgrade", *(r.spec for r in requirements))
    outcome = Outcome(lock, env.versions(), newest, env.failing_tests())
    if outcome.failing:
        attribute(env, outcome, requirements)
    return report(outcome, requirements), not outcome.failing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=PROJECT_DIR)
    parser.add_argument("--venv", type=Path, default=None, help="default PROJECT/.venv-latest")
    parser.add_argument(
        "--out", type=Path, default=None, help="default PROJECT/outputs/test-latest"
    )
    parser.add_argument("--pytest-args", default='-m "not slow"', help="one shell-quoted string")
    parser.add_argument("--pip-arg", action="append", default=[], help="extra pip argument")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    venv = (args.venv or project / ".venv-latest").resolve()
    out = (args.out or project / "outputs" / "test-latest").resolve()
    if venv == project / ".venv":
        parser.error("--venv must not be the project's own .venv")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    log.write_text("")
    env = Env(venv, project, args.pip_arg, shlex.split(args.pytest_args), log)
    try:
        text, passed = run(env)
    except (SetupError, OSError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    (out / "report.md").write_text(text + "\n")
    print(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
