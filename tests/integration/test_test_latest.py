"""The nightly newest-releases check end to end, offline: a small project whose lock pins
version 1.0 of two packages, wheels of 2.0 beside them (one breaks a test, one does not), and
pytest itself repacked from this environment; real venv, real pip, real pytest."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scripts.test_latest import canonical, direct_dependencies, read_lock
from tests.helpers import PROJECT_DIR

PYTEST_DISTS = ("pytest", "pluggy", "iniconfig", "packaging", "pygments")


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(
    wheelhouse: Path, name: str, version: str, files: dict[str, bytes], dist: str = ""
) -> Path:
    """A pure-Python wheel (PEP 427) holding ``files`` plus its dist-info
    (``<dist>.dist-info``, by default named after the project)."""
    dist = dist or f"{name.replace('-', '_')}-{version}"
    files = dict(files)
    files.setdefault(
        f"{dist}.dist-info/METADATA",
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
    )
    files[f"{dist}.dist-info/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [record_line(n, d) for n, d in files.items()] + [f"{dist}.dist-info/RECORD,,"]
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = wheelhouse / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


def repack_installed(wheelhouse: Path, name: str) -> str:
    """A wheel of an installed pure-Python distribution (its files inside site-packages);
    returns its version."""
    dist = importlib.metadata.distribution(name)
    files, info = {}, ""
    for file in dist.files or []:
        if file.parts[0].endswith(".dist-info"):
            info = file.parts[0].removesuffix(".dist-info")
        if file.parts[0] == ".." or file.name == "RECORD" or file.suffix == ".pyc":
            continue
        files[file.as_posix()] = Path(str(dist.locate_file(file))).read_bytes()
    write_wheel(wheelhouse, dist.metadata["Name"], dist.version, files, info)
    return dist.version


def probe(wheelhouse: Path, name: str, version: str) -> None:
    module = name.replace("-", "_")
    write_wheel(
        wheelhouse, name, version, {f"{module}/__init__.py": f"VERSION = {version!r}\n".encode()}
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    pins = [f"{name}=={repack_installed(wheelhouse, name)}" for name in PYTEST_DISTS]
    for name in ("probe-breaks", "probe-fine"):
        probe(wheelhouse, name, "1.0")
        probe(wheelhouse, name, "2.0")
    root = tmp_path / "project"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "p"\nversion = "0"\n'
        'dependencies = ["probe-breaks==1.0"]\n'
        '[project.optional-dependencies]\ndev = ["probe_fine==1.0", "pytest"]\n'
    )
    (root / "requirements.lock").write_text(
        "\n".join(sorted([*pins, "probe-breaks==1.0", "probe-fine==1.0"])) + "\n"
    )
    (root / "tests" / "test_probes.py").write_text(
        "import probe_breaks, probe_fine\n\n"
        "def test_breaks_on_2():\n    assert probe_breaks.VERSION == '1.0'\n\n"
        "def test_fine_any():\n    assert probe_fine.VERSION in ('1.0', '2.0')\n\n"
        "def test_plain():\n    assert True\n"
    )
    return root


def run_check(project: Path) -> subprocess.CompletedProcess[str]:
    wheelhouse = project.parent / "wheels"
    return subprocess.run(
        [
            sys.executable,
            "scripts/test_latest.py",
            "--project",
            str(project),
            "--venv",
            str(project.parent / "venv"),
            "--out",
            str(project.parent / "out"),
            "--pytest-args",
            "tests",
            "--pip-arg=--no-index",
            f"--pip-arg=--find-links={wheelhouse}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=PROJECT_DIR,
    )


@pytest.mark.slow
def test_names_the_upgrade_that_breaks_a_test(project: Path) -> None:
    result = run_check(project)
    assert result.returncode == 1, result.stdout + result.stderr
    text = (project.parent / "out" / "report.md").read_text()
    assert text.strip() == result.stdout.strip()
    assert "| probe-breaks | 1.0 | 2.0 | 2.0 | breaks 1 test(s) |" in text
    assert "| probe_fine | 1.0 | 2.0 | 2.0 | upgraded |" in text
    assert "1 test(s) fail on the newest releases:" in text
    assert "broken by probe-breaks 2.0:\n- `tests/test_probes.py::test_breaks_on_2`" in text
    assert "probe-fine 2.0:" not in text and "together" not in text
    # The project's own .venv is untouched; the check's venv ends on the lock.
    venv_python = project.parent / "venv" / "bin" / "python"
    version = subprocess.run(
        [venv_python, "-c", "import probe_breaks; print(probe_breaks.VERSION)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == "1.0"


@pytest.mark.slow
def test_passes_when_no_upgrade_breaks_anything(project: Path) -> None:
    test_file = project / "tests" / "test_probes.py"
    test_file.write_text(test_file.read_text().replace("== '1.0'", "in ('1.0', '2.0')"))
    result = run_check(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All selected tests pass on the newest releases." in result.stdout
    assert "| probe-breaks | 1.0 | 2.0 | 2.0 | upgraded |" in result.stdout


def test_refuses_the_projects_own_venv() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/test_latest.py", "--venv", str(PROJECT_DIR / ".venv")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_DIR,
    )
    assert result.returncode == 2 and "must not be the project's own .venv" in result.stderr


def test_unbuildable_environment_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\ndependencies = ["nope"]\n')
    (tmp_path / "requirements.lock").write_text("no-such-package-anywhere==1.0\n")
    result = subprocess.run(
        [
            sys.executable,
            "scripts/test_latest.py",
            "--project",
            str(tmp_path),
            "--pip-arg=--no-index",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_DIR,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install" in lines[0] and "failed" in lines[0]


def test_direct_dependencies_of_this_project_drop_pins_and_keep_extras() -> None:
    requirements = direct_dependencies(PROJECT_DIR / "pyproject.toml")
    specs = {r.name: r.spec for r in requirements}
    assert specs["dvc"] == "dvc[gdrive]" and specs["torch"] == "torch"
    assert "pytest" in specs and "ruff" in specs  # optional groups count too
    lock = read_lock(PROJECT_DIR / "requirements.lock")
    missing = [name for name in specs if name not in lock]
    assert not missing, f"direct dependencies missing from requirements.lock: {missing}"
    assert canonical("Pygments") == "pygments" and canonical("a_b.c") == "a-b-c"
