"""benchmarks/explore.py: a failed variant is one line and exit 1, and is run again next
time instead of being skipped as done."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.explore import finished
from benchmarks.variants import parse_variant
from tests.helpers import PROJECT_DIR

EXPLORE_SCRIPT = PROJECT_DIR / "benchmarks" / "explore.py"


def explore(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXPLORE_SCRIPT), "--out", str(out), "--minutes", "0.1", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_DIR,
    )


def test_a_failed_variant_is_one_line_and_is_not_skipped_next_time(tmp_path: Path) -> None:
    # exp1's conv bottleneck needs a multiple of 16: the run is refused before training.
    args = ("--variant", "bad=model.latent_dim=40", "data.source=bundled")
    for _ in range(2):
        result = explore(tmp_path, *args)
        assert result.returncode == 1, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last == f"explore: variant bad failed (exit 2): {tmp_path / 'bad'}/train_model.log"
        assert "Traceback" not in result.stderr
        assert "done before" not in result.stdout


def test_only_a_finished_run_counts_as_done(tmp_path: Path) -> None:
    for status, done in (("finished", True), ("failed", False)):
        folder = tmp_path / status
        folder.mkdir()
        (folder / "result.yaml").write_text(f"status: {status}\nmessage: ''\n")
        assert finished(folder) is done
    assert not finished(tmp_path / "never_ran")


def test_a_variant_keeps_the_commas_of_its_list_values() -> None:
    # bench_train_step split on every comma: [32,64] became three broken overrides.
    spec = "wide=model.hidden_channels=[48,96,192],model.beta=2e-5"
    overrides = ["model.hidden_channels=[48,96,192]", "model.beta=2e-5"]
    assert parse_variant(spec) == ("wide", overrides)
    assert parse_variant("ref=") == ("ref", [])
