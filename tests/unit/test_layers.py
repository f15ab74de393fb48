"""The layer rule of docs/architecture.md, as tests.

Entry points other than training, ``serving/`` and the core run without the training stack:
each is imported (or run) in a fresh interpreter, whose ``sys.modules`` then holds none of
Lightning, Hydra, omegaconf or torchdata. Only ``training/``, ``data/datamodule.py`` and the
training entry point ``train_model.py`` import ``vae_cats.training``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import PROJECT_DIR

PACKAGE_DIR = PROJECT_DIR / "vae_cats"
TRAINING_STACK = ("pytorch_lightning", "lightning", "lightning_fabric", "hydra", "omegaconf")
FORBIDDEN = (*TRAINING_STACK, "torchdata", "vae_cats.training")

# Named in the layer rule (docs/architecture.md); discovery below must find each of them.
REQUIRED = [
    "vae_cats.predict_model",
    "vae_cats.package_model",
    "vae_cats.predict",
    "vae_cats.packager",
    "vae_cats.faces",
    "vae_cats.cli",
    "vae_cats.generate",
    "vae_cats.checkpoint",
    "vae_cats.images",
    "vae_cats.samplers",
    "vae_cats.model",
    "vae_cats.data.store",
    "vae_cats.data.ingest",
]
# The training layer and its entry point: the only modules that may load the training stack.
TRAINING_LAYER = ("vae_cats.training", "vae_cats.data.datamodule", "vae_cats.train_model")
# What the core never imports: entry points, serving/, training/.
ABOVE_CORE = (
    "vae_cats.train_model",
    "vae_cats.predict_model",
    "vae_cats.package_model",
    "vae_cats.serving",
    "vae_cats.training",
)


def light_modules() -> list[str]:
    """Every module of the package outside the training layer: entry points, the core,
    ``data/`` (whichever stage modules exist) and ``serving/`` (once it exists).
    ``__main__`` modules are left out: importing one runs it."""
    import vae_cats

    found = [m.name for m in pkgutil.walk_packages(vae_cats.__path__, "vae_cats.")]
    return sorted(
        name
        for name in ["vae_cats", *found]
        if not name.startswith(TRAINING_LAYER) and not name.endswith(".__main__")
    )


def loaded_after(code: str, timeout: int = 300) -> list[str]:
    """Run ``code`` in a fresh interpreter; the forbidden modules loaded when it ends (an
    ``atexit`` hook reports them, so code that ends in ``SystemExit`` counts too)."""
    probe = textwrap.dedent(f"""
        import atexit, json, sys
        FORBIDDEN = {FORBIDDEN!r}
        def report():
            hit = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN
                         or any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
            sys.__stdout__.write("\\nLOADED=" + json.dumps(hit) + "\\n")
        atexit.register(report)
    """)
    result = subprocess.run(
        [sys.executable, "-c", probe + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_DIR,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("LOADED=")]
    assert lines, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    return list(json.loads(lines[-1].removeprefix("LOADED=")))


def test_discovery_finds_the_modules_the_rule_names() -> None:
    assert set(REQUIRED) <= set(light_modules())


@pytest.mark.parametrize("module", light_modules())
def test_module_imports_without_training_stack(module: str) -> None:
    assert loaded_after(f"import {module}") == []


@pytest.mark.slow
def test_predict_runs_end_to_end_without_training_stack(tmp_path: Path) -> None:
    """The predict image ships none of these: a real run on the shipped model (samples,
    reconstructions from the bundled images, interpolation, offline W&B) must not need them."""
    out = tmp_path / "predict"
    loaded = loaded_after(f"""
        import os, sys
        os.environ["WANDB_MODE"] = "offline"
        from vae_cats.predict_model import main
        sys.argv = ["predict_model", "--n", "4", "--num-recon", "4", "--interpolate",
                    "--out", {str(out)!r}]
        main()
    """)
    assert (out / "samples.png").is_file() and (out / "interpolation.png").is_file()
    assert loaded == []


def test_layer_probe_sees_the_training_stack() -> None:
    """The probe itself works: it reports omegaconf and the training package once loaded."""
    loaded = loaded_after("import omegaconf, vae_cats.training")
    assert {"omegaconf", "vae_cats.training"} <= set(loaded)


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PROJECT_DIR).with_suffix("").parts)


def _import_lines(source: str, package: str, targets: tuple[str, ...]) -> list[int]:
    """Lines of the import statements in ``source`` (a module of ``package``; absolute or
    relative imports) that name a module in ``targets`` or below."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        if any(n == t or n.startswith(f"{t}.") for n in names for t in targets):
            lines.append(node.lineno)
    return lines


def _imports(path: Path, targets: tuple[str, ...]) -> list[str]:
    """``file:line`` of each import in ``path`` naming a module in ``targets`` or below."""
    package = ".".join(path.relative_to(PROJECT_DIR).parent.parts)
    lines = _import_lines(path.read_text(), package, targets)
    return [f"{path.relative_to(PROJECT_DIR)}:{line}" for line in lines]


def test_only_the_training_layer_imports_training() -> None:
    offenders = [
        hit
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if not _module_name(path).startswith(TRAINING_LAYER)
        for hit in _imports(path, ("vae_cats.training",))
    ]
    assert offenders == []


def test_core_imports_no_entry_point_serving_or_training() -> None:
    offenders = [
        hit
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if not _module_name(path).startswith((*ABOVE_CORE, "vae_cats.data.datamodule"))
        for hit in _imports(path, ABOVE_CORE)
    ]
    assert offenders == []


# Command-line modules: argument parsing, one library call, printing, the exit code. Nothing
# imports from them (docs/architecture.md), except an entry point handing its argv to another
# one's ``main`` (the predict image's ``serving/image.py``).
CLI_MODULES = (
    "vae_cats.train_model",
    "vae_cats.predict_model",
    "vae_cats.package_model",
    "vae_cats.serving.__main__",
    "vae_cats.serving.image",
)
SCANNED_DIRS = ("vae_cats", "benchmarks", "scripts")


def _cli_import_lines(source: str, module: str) -> list[int]:
    """Lines of the imports in ``source`` (the text of ``module``) that take anything from a
    CLI module, except a CLI module taking another one's ``main``."""
    package = module.rpartition(".")[0]
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        hands_over = (
            isinstance(node, ast.ImportFrom)
            and module in CLI_MODULES
            and node.module in CLI_MODULES
            and [alias.name for alias in node.names] == ["main"]
        )
        if not hands_over and _import_lines(ast.unparse(node), package, CLI_MODULES):
            lines.append(node.lineno)
    return lines


def test_nothing_imports_from_a_command_line_module() -> None:
    """Library code lives in library modules: a front end (API, page, notebook, benchmark)
    never needs a CLI module, and a CLI module is parsing, one call and printing."""
    offenders = [
        f"{path.relative_to(PROJECT_DIR)}:{line}"
        for folder in SCANNED_DIRS
        for path in sorted((PROJECT_DIR / folder).rglob("*.py"))
        for line in _cli_import_lines(path.read_text(), _module_name(path))
    ]
    assert offenders == []


def test_cli_import_scan_finds_library_use_of_a_cli() -> None:
    """The scan itself works: a helper taken from a CLI module is found, in a library module
    and in another CLI module; a CLI module handing its argv to another one's ``main`` is not."""
    text = (
        "from vae_cats.predict_model import InputError\n"
        "import vae_cats.package_model\n"
        "from vae_cats import train_model\n"
        "from .. import package_model\n"
        "from vae_cats.predict_model import main\n"
    )
    assert _cli_import_lines(text, "vae_cats.serving.service") == [1, 2, 3, 4, 5]
    assert _cli_import_lines(text, "vae_cats.serving.image") == [1, 2, 3, 4]


def test_import_scan_finds_absolute_and_relative_imports() -> None:
    """The scan itself works: on a file that imports the training layer, and on relative
    imports (``from ..training import x`` inside ``vae_cats/serving/``)."""
    assert _imports(PACKAGE_DIR / "train_model.py", ("vae_cats.training",))
    training = ("vae_cats.training",)
    assert _import_lines("from ..training import train\n", "vae_cats.serving", training) == [1]
    assert _import_lines("from . import train\n", "vae_cats.training", training) == [1]
    assert _import_lines("from .. import model\n", "vae_cats.serving", training) == []


def test_no_top_level_module_hides_an_installed_one() -> None:
    """``python vae_cats/<script>.py`` puts ``vae_cats/`` first on ``sys.path``: a module there
    named like an installed one (``packaging.py``) replaces it for Hydra and every other
    library, and training died with "'packaging' is not a package"."""
    hiding = [
        path.name
        for path in sorted(PACKAGE_DIR.glob("*.py"))
        if path.stem != "__init__" and importlib.util.find_spec(path.stem) is not None
    ]
    assert hiding == []


def test_architecture_page_names_every_module() -> None:
    """docs/architecture.md has a line for each module (``__init__`` files aside)."""
    page = (PROJECT_DIR / "docs" / "architecture.md").read_text()
    missing = [
        path.relative_to(PACKAGE_DIR).as_posix()
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if path.name != "__init__.py"
        and f"`{path.relative_to(PACKAGE_DIR).as_posix()}`" not in page
    ]
    assert missing == []
