"""Shared fixtures: small real samples of cat faces and one real trained checkpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# Under pytest-xdist (`make test` runs `-n auto`), the workers share the cores: each worker and
# the training subprocesses it starts get an equal share of torch/OpenMP threads, set before
# torch is first imported. Oversubscribed OpenMP threads spin against each other and slow
# every worker several-fold.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)

import pytest  # noqa: E402

from tests.helpers import FAST_TRAIN_OVERRIDES, bundled_members, run_train  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Container tests first: under `make test` (xdist, whole files per worker, collection
    order) one worker starts the long image build at once while the others run the rest."""
    items.sort(key=lambda item: item.get_closest_marker("container") is None)


@pytest.fixture(autouse=True, scope="session")
def _offline_wandb(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["WANDB_MODE"] = "offline"
    os.environ.pop("WANDB_API_KEY", None)
    os.environ.setdefault("WANDB_SILENT", "true")
    # Offline runs stage each logged checkpoint (tens of MB) under $WANDB_DATA_DIR until
    # `wandb sync`: keep the tests' copies out of the home folder.
    os.environ["WANDB_DATA_DIR"] = str(tmp_path_factory.mktemp("wandb_data"))


@pytest.fixture(autouse=True)
def _no_shared_wandb_service() -> Iterator[None]:
    """Keep each training subprocess on its own W&B service.

    An in-process ``wandb.init`` (e.g. a predict test) starts a service and exports its
    address as ``$WANDB_SERVICE``; subprocesses started later by the same worker inherit it
    and attach to that service. A SIGKILLed training run then stays registered there, and its
    resume is refused with "run ID ... is in use" (the resume tests failed that way in CI).
    """
    os.environ.pop("WANDB_SERVICE", None)
    yield
    os.environ.pop("WANDB_SERVICE", None)


@pytest.fixture
def real_folder(tmp_path: Path) -> Path:
    """40 distinct real cat faces plus 7 byte-identical copies of 5 of them."""
    folder = tmp_path / "cats"
    folder.mkdir()
    members = bundled_members(40)
    for name, raw in members:
        (folder / name).write_bytes(raw)
    for i, (_, raw) in enumerate(members[:5]):
        (folder / f"copy_{i}.jpg").write_bytes(raw)
    for i, (_, raw) in enumerate(members[:2]):
        (folder / f"copy_again_{i}.jpg").write_bytes(raw)
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folder of a real demo training of a few steps on the bundled sample."""
    run_dir = tmp_path_factory.mktemp("trained_run")
    overrides = [
        o for o in FAST_TRAIN_OVERRIDES if "train_batches" not in o and "max_epochs" not in o
    ]
    result = run_train(
        run_dir,
        "experiments=demo",
        *overrides,
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir
