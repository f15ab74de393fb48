"""The predict script as a user runs it, on a real trained checkpoint."""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import read_image

from tests.helpers import bundled_members, run_predict, wandb_history
from vae_cats.checkpoint import SHIPPED_MODEL, read_checkpoint
from vae_cats.data.ingest import ingest
from vae_cats.generate import SAMPLER_NAMES
from vae_cats.images import to_uint8
from vae_cats.packager import DEFAULT_SAMPLER
from vae_cats.predict import load_model, sample_images
from vae_cats.predict_model import main as predict_main
from vae_cats.samplers import LEARNED_SAMPLERS, stored_samplers
from vae_cats.serving.launch import running_server

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


def test_every_stored_sampler_of_the_shipped_model_draws_faces(tmp_path: Path) -> None:
    """``--sampler`` picks each learned sampler the shipped model stores: faces (not flat),
    other codes than the next sampler's, and the same picture for the same seed."""
    grids = {}
    for name in LEARNED_SAMPLERS:
        out = tmp_path / name
        result = run_predict("--n", "8", "--sampler", name, "--no-wandb", "--out", str(out))
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{SAMPLER_NAMES[name]} stored in the checkpoint" in result.stdout
        grids[name] = read_image(str(out / "samples.png"))
        assert cells(grids[name], 1, 8)[0].float().std(dim=(1, 2, 3)).min() > 10
    again = tmp_path / "again"
    run_predict("--n", "8", "--sampler", "flow", "--no-wandb", "--out", str(again))
    assert torch.equal(read_image(str(again / "samples.png")), grids["flow"])
    assert not torch.equal(grids["flow"], grids["pca_gmm"])
    assert not torch.equal(grids["pca_gmm"], grids["gmm"])


def test_predict_without_model_uses_the_shipped_model(tmp_path: Path) -> None:
    result = run_predict("--n", "4", "--no-wandb", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the shipped model" in result.stdout
    singles = sorted((tmp_path / "out" / "samples").glob("*.png"))
    assert [read_image(str(p)).shape for p in singles] == [(3, 64, 64)] * 4
    assert all(read_image(str(p)).float().std() > 1.0 for p in singles)  # faces, not flat


def test_shipped_model_is_small_and_carries_its_sampler_and_lineage() -> None:
    assert SHIPPED_MODEL.stat().st_size <= 15_000_000
    checkpoint = read_checkpoint(SHIPPED_MODEL)
    assert {"latent_pca", "test_faces", "test_faces_source"} <= set(checkpoint)
    assert stored_samplers(checkpoint) == list(LEARNED_SAMPLERS)
    assert checkpoint["default_sampler"] == DEFAULT_SAMPLER
    assert {"config", "git_commit", "data_hash"} <= set(checkpoint["lineage"])
    # Its test faces come from the split its lineage names: the one it did not train on.
    assert checkpoint["test_faces_source"]["data_hash"] == checkpoint["lineage"]["data_hash"]
    assert checkpoint["test_faces_source"]["source"] == "cats64.tar"
    assert checkpoint["test_faces"].dtype == torch.uint8
    assert checkpoint["test_faces"].shape == (32, 3, 64, 64)


def few_faces(tmp_path: Path) -> Path:
    """A folder of 8 real faces that split 6 train, 1 val, 1 test: picked by their splits in
    an ingest of 40, which they keep in a folder of their own (a photo's split is a hash of
    its pixels, whatever else the source holds)."""
    pool = tmp_path / "pool"
    pool.mkdir()
    members = dict(bundled_members(40))
    for name, raw in members.items():
        (pool / name).write_bytes(raw)
    manifest = ingest(pool, tmp_path / "pool_processed")
    by_split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for record in manifest["images"]:
        by_split[record["split"]].append(record["name"])
    chosen = by_split["train"][:6] + by_split["val"][:1] + by_split["test"][:1]
    assert len(chosen) == 8
    few = tmp_path / "few"
    few.mkdir()
    for name in chosen:
        (few / name).write_bytes(members[name])
    return few


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("images_missing", "no_such_folder"),
        ("images_not_images", "notes.txt"),
        ("images_too_few_to_interpolate", "few"),
        ("images_too_few_for_the_mixture", "--sampler gmm"),
        ("out_is_a_file", "--out"),
        ("out_unwritable", "--out /proc/nope"),
        ("out_under_a_file", "--out"),
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
    few = few_faces(tmp_path)  # 8 real faces: 6 train, 1 val, 1 test after the split
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
        "out_unwritable": ["--out", "/proc/nope"],
        "out_under_a_file": ["--out", str(tmp_path / "a_file" / "sub")],
        "model_is_a_folder": ["--model", str(tmp_path)],
    }[case]
    code = predict_main(["--out", str(out), "--no-wandb", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("predict_model: error:") and named in err[0]
    assert err[0].count(named) == 1  # the missing source was named twice
    assert not (out / "samples.png").exists()
    assert not Path("/proc/nope").exists()


def test_a_smaller_n_leaves_no_stale_single_pngs(trained_run: Path, tmp_path: Path) -> None:
    model = str(trained_run / "checkpoints" / "best.ckpt")
    out = tmp_path / "out"
    for n in ("12", "5"):
        assert predict_main(["--model", model, "--n", n, "--out", str(out), "--no-wandb"]) == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        f"sample_{i:03d}.png" for i in range(5)
    ]


def cells(grid: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The (rows, cols, 3, 64, 64) images of a ``make_grid`` picture (2-pixel gaps)."""
    return torch.stack(
        [
            torch.stack(
                [grid[:, 2 + r * 66 : 66 + r * 66, 2 + c * 66 : 66 + c * 66] for c in range(cols)]
            )
            for r in range(rows)
        ]
    )


def test_shipped_model_reconstructs_its_own_test_faces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default the faces reconstructed are the test faces stored in the shipped model (its
    own cats64 test split), not the bundled sample's split that overlaps its training set."""
    out = tmp_path / "out"
    assert predict_main(["--n", "2", "--num-recon", "8", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "from the model's own test split (cats64.tar, seed 42)" in captured.out
    assert "warning" not in captured.err
    (run,) = (out / "wandb").glob("offline-run-*")
    (row,) = wandb_history(run)
    caption = row["predict/reconstructions/caption"]
    assert caption.startswith("8 faces from the model's own test split (cats64.tar, seed 42)")
    stored = read_checkpoint(SHIPPED_MODEL)["test_faces"]
    grid = read_image(str(out / "reconstructions.png"))
    assert grid.shape == (3, 2 + 2 * 66, 2 + 8 * 66)
    assert torch.equal(cells(grid, 1, 8)[0], stored[:8])  # row 1: exactly those faces


def test_images_of_another_split_reconstruct_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["--images", "bundled", "--n", "2", "--num-recon", "4", "--out", str(out)]
    assert predict_main([*args, "--no-wandb"]) == 0
    captured = capsys.readouterr()
    warning = captured.err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("predict_model: warning: cats_sample.tar")
    assert "not the one the model trained on" in warning[0]
    assert "the test split of cats_sample.tar (seed 42; not the model's own split)" in captured.out


def test_one_face_with_interpolate_and_traverse_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--num-recon 1 once crashed --interpolate after samples.png was written, and made
    --traverse take a std over one code; interpolation now draws its own pairs of test faces
    and traversal the principal components of the training means."""
    out = tmp_path / "out"
    args = ["--num-recon", "1", "--interpolate", "--traverse", "--n", "2", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # std() of one value warned
        assert predict_main([*args, "--no-wandb"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert read_image(str(out / "reconstructions.png")).shape == (3, 2 + 2 * 66, 2 + 66)
    interpolation = read_image(str(out / "interpolation.png"))
    assert interpolation.shape == (3, 2 + 4 * 66, 2 + 8 * 66)
    stored = read_checkpoint(SHIPPED_MODEL)["test_faces"]
    rows = cells(interpolation, 4, 8).float()
    # each row runs from (the reconstruction of) one stored face to the next one
    assert (rows[0, 0] - stored[0].float()).abs().mean() < (
        rows[0, 0] - stored[1].float()
    ).abs().mean()
    assert read_image(str(out / "traversal.png")).shape == (3, 2 + 8 * 66, 2 + 9 * 66)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--n", "0"),
        ("--n", "10001"),
        ("--seed", "-1"),
        ("--seed", str(2**32)),
        ("--num-recon", "0"),
        ("--num-recon", "257"),
    ],
)
def test_out_of_range_options_exit_2_before_any_work(
    option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        predict_main([option, value, "--out", str(out), "--no-wandb"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[0].startswith("usage: predict_model") and option in err[-1] and value in err[-1]
    assert not out.exists()


def test_large_n_caps_the_grid_and_writes_every_single_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert predict_main(["--n", "300", "--out", str(out), "--no-wandb"]) == 0
    assert "the grid shows the first 256" in capsys.readouterr().out
    singles = sorted((out / "samples").glob("sample_*.png"))
    assert [p.name for p in singles[:2]] == ["sample_000.png", "sample_001.png"]
    assert len(singles) == 300 and singles[-1].name == "sample_299.png"
    grid = read_image(str(out / "samples.png"))
    assert grid.shape == (3, 2 + 32 * 66, 2 + 8 * 66)  # 256 of 300, not 38 rows
    assert torch.equal(cells(grid, 32, 8)[31, 7], read_image(str(singles[255])))


def test_rerun_without_options_removes_their_stale_pictures(tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = ["--n", "2", "--out", str(out), "--no-wandb"]
    assert predict_main([*base, "--interpolate", "--traverse"]) == 0
    assert (out / "interpolation.png").is_file() and (out / "traversal.png").is_file()
    assert predict_main([*base, "--traverse"]) == 0
    assert not (out / "interpolation.png").exists() and (out / "traversal.png").is_file()
    assert predict_main(base) == 0
    assert not (out / "traversal.png").exists() and (out / "samples.png").is_file()


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        predict_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0
    assert "(default: 64)" in text and "(default: outputs/predict)" in text
    # --seed names its range, which the parser enforces (issue 22, item 14)
    assert "from 0 to 2**32-1 (4294967295) (default: 0)" in text


def edited_copy(original: Path, path: Path, **data: Any) -> Path:
    """A copy of the checkpoint ``original`` at ``path`` whose lineage's data config has
    ``data`` in it: a model whose lineage names another training source."""
    checkpoint = torch.load(original, map_location="cpu", weights_only=True)
    checkpoint["lineage"]["config"]["data"].update(data)
    torch.save(checkpoint, path)
    return path


def test_default_sampler_of_a_training_checkpoint_is_the_mixture_of_its_data(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A training checkpoint stores no mixture: the default sampler fits one on the training
    faces of the data its lineage names and says so (it decoded N(0, I) texture; issue 22,
    item 6), the same codes as ``--sampler gmm``; its reconstructions are then the model's own
    test split. With that data gone, the bundled sample stands in, named as such."""
    model = trained_run / "checkpoints" / "best.ckpt"
    base = ["--n", "4", "--seed", "1", "--no-wandb"]
    assert predict_main(["--model", str(model), *base, "--out", str(tmp_path / "d")]) == 0
    captured = capsys.readouterr()
    assert "4 samples from Gaussian mixture fitted on" in captured.out
    assert "training images of cats_sample.tar (the data its lineage names)" in captured.out
    assert "(the default sampler; --sampler normal draws from N(0, I))" in captured.out
    assert "the test split of cats_sample.tar (seed 42; the model's own test split)" in (
        captured.out
    )
    assert captured.err == ""
    gmm = ["--model", str(model), *base, "--sampler", "gmm", "--out", str(tmp_path / "g")]
    assert predict_main(gmm) == 0
    normal = ["--model", str(model), *base, "--sampler", "normal", "--out", str(tmp_path / "n")]
    assert predict_main(normal) == 0
    default, mixture, noise = (
        read_image(str(tmp_path / name / "samples.png")) for name in ("d", "g", "n")
    )
    assert torch.equal(default, mixture) and not torch.equal(default, noise)
    gone = edited_copy(model, tmp_path / "gone.ckpt", source=str(tmp_path / "deleted_folder"))
    assert predict_main(["--model", str(gone), *base, "--out", str(tmp_path / "b")]) == 0
    assert "of cats_sample.tar (the bundled sample)" in capsys.readouterr().out


def test_split_warning_names_the_images_of_the_models_own_split(
    real_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The warning that the scored split is not the model's own says which ``--images`` to
    pass when the data the lineage names exists here, and nothing more when it does not
    (issue 22, item 9)."""
    model = edited_copy(SHIPPED_MODEL, tmp_path / "model.ckpt", source=str(real_folder))
    args = ["--model", str(model), "--images", "bundled", "--n", "2", "--num-recon", "2"]
    assert predict_main([*args, "--out", str(tmp_path / "a"), "--no-wandb"]) == 0
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("predict_model: warning: cats_sample.tar")
    assert warning.endswith(
        f"; for the model's own test split pass --images {real_folder} "
        "(the data its lineage names)"
    )
    edited_copy(SHIPPED_MODEL, model, source=str(tmp_path / "deleted_folder"))
    assert predict_main([*args, "--out", str(tmp_path / "b"), "--no-wandb"]) == 0
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert "not the one the model trained on" in warning and "--images" not in warning


def png_pixels(raw: bytes) -> torch.Tensor:
    """uint8 (3, H, W) pixels of PNG bytes."""
    array = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def test_same_seed_same_picture_from_cli_library_and_api(tmp_path: Path) -> None:
    """One seed, one picture, whichever front end draws it: the predict command's single PNGs
    and grid, the library call ``sample_images`` and ``POST /generate`` of a real server
    (``python -m vae_cats.serving``, torch backend), each with its default sampler (the
    shipped model's stored mixture) and with ``normal``."""
    n, seed = 8, 123456
    library = load_model()
    with running_server(SHIPPED_MODEL, "torch") as (url, _):
        for sampler in ("default", "normal"):
            out = tmp_path / sampler
            cli = ["--n", str(n), "--seed", str(seed), "--sampler", sampler, "--out", str(out)]
            assert predict_main([*cli, "--no-wandb"]) == 0
            singles = torch.stack(
                [read_image(str(out / "samples" / f"sample_{i:03d}.png")) for i in range(n)]
            )
            drawn = to_uint8(sample_images(library, n, seed=seed, sampler=sampler))
            assert torch.equal(drawn, singles), sampler
            body: dict[str, Any] = {"n": n, "seed": seed, "format": "png"}
            if sampler != "default":
                body["sampler"] = sampler
            response = httpx.post(f"{url}/generate", json=body, timeout=120)
            assert response.status_code == 200, response.text
            assert torch.equal(png_pixels(response.content), read_image(str(out / "samples.png")))


def test_pngs_are_readable_by_others_under_umask_022(tmp_path: Path) -> None:
    out = tmp_path / "out"
    previous = os.umask(0o022)
    try:
        assert predict_main(["--n", "2", "--out", str(out), "--no-wandb"]) == 0
    finally:
        os.umask(previous)
    for path in (out / "samples.png", out / "samples" / "sample_000.png"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
