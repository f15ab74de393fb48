"""benchmarks/bench_model.py as ``make bench`` runs it: one-line refusals, one table with its
header first, outputs outside the tracked reports/, a warning for another split."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from torchvision.io import read_image

from tests.helpers import PROJECT_DIR, run_script
from vae_cats.predict_model import SHIPPED_MODEL

BENCH_SCRIPT = PROJECT_DIR / "benchmarks" / "bench_model.py"
REPORTS = PROJECT_DIR / "reports"


def run_bench(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return run_script(BENCH_SCRIPT, *args, timeout=timeout, cwd=cwd)


def reports_state() -> dict[str, str]:
    return {
        str(p.relative_to(REPORTS)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in REPORTS.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("missing_checkpoint", "no such checkpoint file"),
        ("no_name", "give NAME=PATH"),
        ("same_name_twice", "given twice"),
        ("unwritable_out", "--out /proc/nope: cannot write"),
        ("too_few_two_sample_faces", "--two-sample-faces 7: a two-sample test needs at least 8"),
        ("no_two_sample_repeats", "--two-sample-repeats 0: give at least 1"),
        ("no_two_sample_steps", "--two-sample-steps 0: give 1 to 100000 steps"),
        ("endless_two_sample_steps", f"--two-sample-steps {10**20}: give 1 to 100000 steps"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(case: str, named: str, tmp_path: Path) -> None:
    shipped = f"shipped={SHIPPED_MODEL}"
    args = {
        "missing_checkpoint": ["--run", f"x={tmp_path / 'missing.ckpt'}"],
        "no_name": ["--run", str(SHIPPED_MODEL)],
        "same_name_twice": ["--run", shipped, "--run", shipped],
        "unwritable_out": ["--run", shipped, "--out", "/proc/nope"],
        "too_few_two_sample_faces": ["--run", shipped, "--two-sample-faces", "7"],
        "no_two_sample_repeats": ["--run", shipped, "--two-sample-repeats", "0"],
        "no_two_sample_steps": ["--run", shipped, "--two-sample-steps", "0"],
        "endless_two_sample_steps": ["--run", shipped, "--two-sample-steps", str(10**20)],
    }[case]
    result = run_bench(*args, cwd=tmp_path, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("bench_model: error:") and named in lines[0]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "data").exists()


def test_help_shows_no_default_for_the_required_run(tmp_path: Path) -> None:
    result = run_bench("--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "--run RUN NAME=PATH/TO.ckpt, once per checkpoint --out" in text
    assert "(default: None)" not in text
    assert "(default: outputs/bench)" in text  # optional options keep their defaults


@pytest.mark.slow
def test_bench_prints_one_table_and_keeps_reports_untouched(tmp_path: Path) -> None:
    """The shipped model on the bundled sample's test split (not its own: a warning), run
    from another folder with the default --out: outputs/bench/ there, reports/ unchanged;
    the two-sample columns hold accuracies inside their intervals (10 classifier steps: the
    table's shape, not the test's power, which tests/unit/test_two_sample.py checks)."""
    before = reports_state()
    result = run_bench(
        "--run",
        f"shipped={SHIPPED_MODEL}",
        "--source",
        "bundled",
        "--two-sample-faces",
        "32",
        "--two-sample-repeats",
        "2",
        "--two-sample-steps",
        "10",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    table, samplers = lines[:3], lines[3:]
    assert table[0].startswith("| run | ssim |") and table[1].startswith("|---|")
    assert "| c2st_recon |" in table[0]
    assert "two-sample tests on 32 faces a side, 10 steps" in result.stdout
    assert table[2].startswith("| shipped |")
    assert sum(line.startswith("| run |") for line in table) == 1
    # The sampler table: one line per sampler, the stored mixture and the fitted ones.
    assert samplers[0].startswith("| run | sampler | realism | diversity | sharpness | c2st |")
    names = ["normal", "gmm", "pca_gmm", "flow"]
    assert [line.split("|")[2].strip() for line in samplers[2:]] == names
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "run shipped" in warnings[0]
    assert "not its own test split" in warnings[0]
    out = tmp_path / "outputs" / "bench"
    (row,) = json.loads((out / "benchmark.json").read_text())
    assert row["run"] == "shipped" and row["same_split"] is False and 0 < row["ssim"] < 1
    # The decoder blurs: its reconstructions hold less fine detail than the faces.
    assert 0.05 < row["recon_sharpness"] < 1
    assert row["samplers"] == names
    for key in ["recon", *names]:
        low, high = row[f"c2st_{key}_ci"]
        assert 0 <= low <= row[f"c2st_{key}"] <= high <= 1
        runs = row[f"c2st_{key}_runs"]
        assert len(runs) == 2 and row[f"c2st_{key}"] == pytest.approx(sum(runs) / 2)
    for name in names:
        assert 0 < row[f"sample_ms_{name}"] and 0 < row[f"diversity_{name}"]
        grid = read_image(str(out / f"samples_shipped_{name}.png"))
        assert grid.shape[0] == 3 and grid.float().std() > 10  # faces, not a blank picture
    assert reports_state() == before
