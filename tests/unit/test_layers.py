"""The layer rule of docs/architecture.md, as tests.

Entry points other than training, ``serving/`` and the core run without the training stack:
each is imported (or run) in a fresh interpreter, whose ``sys.modules`` then holds none of
Lightning, Hydra, omegaconf or torchdata. Only ``training/``, ``data/datamodule.py`` and the
training entry point ``train_model.py`` import ``vae_cats.training``.
"""

from __future__ import annotations

import ast
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


def _imports_training(path: Path) -> list[str]:
    """Import statements of ``path`` that name ``vae_cats.training`` (absolute or relative)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(PROJECT_DIR).parent.parts)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        if any(n == "vae_cats.training" or n.startswith("vae_cats.training.") for n in names):
            hits.append(f"{path.relative_to(PROJECT_DIR)}:{node.lineno}")
    return hits


def test_only_the_training_layer_imports_training() -> None:
    offenders = [
        hit
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if not _module_name(path).startswith(TRAINING_LAYER)
        for hit in _imports_training(path)
    ]
    assert offenders == []


def test_import_scan_finds_training_imports() -> None:
    """The scan itself works on the files that do import the training layer."""
    assert _imports_training(PACKAGE_DIR / "train_model.py")
    assert _imports_training(PACKAGE_DIR / "training" / "train.py")
