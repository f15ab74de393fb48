"""The predict script as a user runs it, on a real trained checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.io import read_image

from tests.helpers import bundled_members, run_predict, wandb_history
from vae_cats.checkpoint import read_checkpoint
from vae_cats.predict_model import main as predict_main

pytestmark = pytest.mark.slow


def test_predict_writes_grid_singles_and_reconstructions(
    trained_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_predict(
        "--model",
        str(trained_run / "checkpoints" / "best.ckpt"),
        "--n",
        "10",
        "--seed",
        "3",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    singles = sorted((out / "samples").glob("sample_*.png"))
    assert len(singles) == 10
    assert all(read_image(str(p)).shape == (3, 64, 64) for p in singles)
    grid = read_image(str(out / "samples.png"))
    assert grid.shape == (3, 2 + 2 * 66, 2 + 8 * 66)
    assert torch.equal(grid[:, 2:66, 2:66], read_image(str(singles[0])))
    assert read_image(str(out / "reconstructions.png")).shape[1] == 2 + 4 * 66
    (run,) = (out / "wandb").glob("offline-run-*")
    (row,) = wandb_history(run)
    for key in ("samples", "reconstructions"):
        shown = read_image(str(run / "files" / row[f"predict/{key}/path"]))
        assert torch.equal(shown, read_image(str(out / f"{key}.png")))


def test_predict_same_seed_same_files(trained_run: Path, tmp_path: Path) -> None:
    model = str(trained_run / "checkpoints" / "best.ckpt")
    for name in ("a", "b"):
        result = run_predict(
            "--model",
            model,
            "--n",
            "4",
            "--seed",
            "9",
            "--out",
            str(tmp_path / name),
            "--no-wandb",
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "a" / "samples.png").read_bytes() == (
        tmp_path / "b" / "samples.png"
    ).read_bytes()


@pytest.mark.parametrize("kind", ["missing", "truncated", "text", "tensor"])
def test_bad_model_is_a_one_line_error(kind: str, trained_run: Path, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        path.write_bytes((trained_run / "checkpoints" / "best.ckpt").read_bytes()[:5000])
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    result = run_predict("--model", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_predict_gmm_interpolate_and_traverse(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_predict(
        "--model",
        str(trained_run / "checkpoints" / "best.ckpt"),
        "--n",
        "8",
        "--sampler",
        "gmm",
        "--interpolate",
        "--traverse",
        "--no-wandb",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Gaussian mixture fitted on" in result.stdout
    assert read_image(str(out / "interpolation.png")).shape == (3, 2 + 4 * 66, 2 + 8 * 66)
    assert read_image(str(out / "traversal.png")).shape == (3, 2 + 8 * 66, 2 + 9 * 66)


def test_package_model_then_predict_uses_its_mixture(trained_run: Path, tmp_path: Path) -> None:
    slim = tmp_path / "slim.ckpt"
    package = subprocess.run(
        [
            sys.executable,
            "-m",
            "vae_cats.package_model",
            "--model",
            str(trained_run / "checkpoints" / "best.ckpt"),
            "--out",
            str(slim),
            "--components",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert package.returncode == 0, package.stderr[-3000:]
    checkpoint = read_checkpoint(slim)
    assert set(checkpoint) == {"net_config", "state_dict", "lineage", "gmm_sampler"}
    assert slim.stat().st_size < (trained_run / "checkpoints" / "best.ckpt").stat().st_size
    result = run_predict(
        "--model", str(slim), "--n", "4", "--no-wandb", "--out", str(tmp_path / "o")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Gaussian mixture stored in the checkpoint" in result.stdout


def test_predict_without_model_uses_the_shipped_model(tmp_path: Path) -> None:
    result = run_predict("--n", "4", "--no-wandb", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the shipped model" in result.stdout
    singles = sorted((tmp_path / "out" / "samples").glob("*.png"))
    assert [read_image(str(p)).shape for p in singles] == [(3, 64, 64)] * 4
    assert all(read_image(str(p)).float().std() > 1.0 for p in singles)  # faces, not flat


def test_shipped_model_is_small_and_carries_its_sampler_and_lineage() -> None:
    from vae_cats.predict_model import SHIPPED_MODEL

    assert SHIPPED_MODEL.stat().st_size <= 15_000_000
    checkpoint = read_checkpoint(SHIPPED_MODEL)
    assert "gmm_sampler" in checkpoint
    assert {"config", "git_commit", "data_hash"} <= set(checkpoint["lineage"])


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("images_missing", "no_such_folder"),
        ("images_not_images", "notes.txt"),
        ("images_too_few_to_interpolate", "few"),
        ("images_too_few_for_the_mixture", "--sampler gmm"),
        ("out_is_a_file", "--out"),
        ("model_is_a_folder", "is a folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    case: str,
    named: str,
    trained_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In-process (the same ``main`` as the console script): every bad input is one line
    naming it on stderr and exit code 2, with nothing written."""
    few = tmp_path / "few"  # 8 real faces: 6 train, 1 val, 1 test after the split
    few.mkdir()
    for name, raw in bundled_members(8):
        (few / name).write_bytes(raw)
    (tmp_path / "notes.txt").write_text("not images\n")
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "out"
    args = {
        "images_missing": ["--images", str(tmp_path / "no_such_folder")],
        "images_not_images": ["--images", str(tmp_path / "notes.txt")],
        "images_too_few_to_interpolate": ["--images", str(few), "--interpolate"],
        "images_too_few_for_the_mixture": [
            "--images",
            str(few),
            "--sampler",
            "gmm",
            "--model",
            str(trained_run / "checkpoints" / "best.ckpt"),
        ],
        "out_is_a_file": ["--out", str(tmp_path / "a_file")],
        "model_is_a_folder": ["--model", str(tmp_path)],
    }[case]
    code = predict_main(["--out", str(out), "--no-wandb", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("predict_model: error:") and named in err[0]
    assert not (out / "samples.png").exists()


def test_a_smaller_n_leaves_no_stale_single_pngs(trained_run: Path, tmp_path: Path) -> None:
    model = str(trained_run / "checkpoints" / "best.ckpt")
    out = tmp_path / "out"
    for n in ("12", "5"):
        assert predict_main(["--model", model, "--n", n, "--out", str(out), "--no-wandb"]) == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        f"sample_{i:03d}.png" for i in range(5)
    ]
