"""package_model as a user runs it: refusals before any work, slim models that keep their
weights, and test faces the model did not train on."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.io import read_image

from tests.helpers import PROJECT_DIR, run_predict
from vae_cats.checkpoint import SHIPPED_MODEL, read_checkpoint
from vae_cats.data.store import ingested
from vae_cats.generate import SAMPLER_NAMES
from vae_cats.package_model import main as package_main
from vae_cats.packager import DEFAULT_SAMPLER, STORED_COMPONENTS, package


def run_package(*args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """``python -m vae_cats.package_model ARGS`` as a real subprocess under ``umask``."""
    return subprocess.run(
        [sys.executable, "-m", "vae_cats.package_model", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PROJECT_DIR,
        preexec_fn=lambda: os.umask(umask),
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pixel_hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in images}


def test_package_without_out_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    before = sha256(SHIPPED_MODEL)
    with pytest.raises(SystemExit) as exit_info:
        package_main(["--model", str(SHIPPED_MODEL)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert err[0].startswith("usage: package_model") and "--out" in err[-1]
    assert sha256(SHIPPED_MODEL) == before


def test_existing_out_without_force_is_refused_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine.ckpt"
    out.write_bytes(b"someone's model\n" * 1000)
    before = out.read_bytes()
    assert package_main(["--model", str(SHIPPED_MODEL), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {out}" in err[0] and "--force" in err[0]
    assert out.read_bytes() == before


@pytest.mark.parametrize("where", ["/proc/x.ckpt", "under_a_file/x.ckpt"])
def test_unwritable_out_is_refused_before_any_work(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The --out check comes first: a missing --source (read later) is not what is named."""
    (tmp_path / "under_a_file").write_text("")
    out = Path(where) if where.startswith("/") else tmp_path / where
    args = ["--model", str(SHIPPED_MODEL), "--out", str(out), "--source", str(tmp_path / "nope")]
    assert package_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"package_model: error: --out {out}: cannot write")
    assert not out.exists()


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        package_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 32)" in text
    # Required options have no default to show (issue 22, item 14).
    assert "--model MODEL checkpoint (.ckpt) --out OUT where to write the slim model --force" in (
        text
    )


@pytest.mark.slow
def test_package_is_a_library_call_taking_str_paths(tmp_path: Path) -> None:
    """``vae_cats.packager.package`` does what the command does, with ``str`` paths, and
    returns its warnings instead of printing them."""
    out = tmp_path / "again.ckpt"
    result = package(str(SHIPPED_MODEL), str(out), source="bundled", test_faces=0)
    assert result.out == out and out.is_file()
    assert "gmm kept" in result.summary and result.warnings == []
    assert torch.equal(
        read_checkpoint(out)["gmm_sampler"]["means"],
        read_checkpoint(SHIPPED_MODEL)["gmm_sampler"]["means"],
    )


@pytest.mark.slow
def test_repackaging_the_shipped_model_keeps_weights_and_mixture(tmp_path: Path) -> None:
    """A slim model packages again (here on the bundled sample, another split than its own):
    weights and mixture bit-identical, the new samplers and principal components added; what
    describes its own split (test faces, test metrics, drift statistics) kept, not replaced by
    figures of a split that holds its training faces; the file readable by others under umask
    022."""
    out = tmp_path / "again.ckpt"
    result = run_package(
        "--model", str(SHIPPED_MODEL), "--out", str(out), "--source", "bundled", umask=0o022
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(out.resolve()) in result.stdout and "gmm kept" in result.stdout
    (warning,) = result.stderr.strip().splitlines()
    assert "not the one the model trained on" in warning
    assert "kept from --model: test_faces, test_faces_source, metrics, drift" in warning
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    old, new = read_checkpoint(SHIPPED_MODEL), read_checkpoint(out)
    assert new["state_dict"].keys() == old["state_dict"].keys()
    for key, value in old["state_dict"].items():
        assert new["state_dict"][key].dtype == torch.float16
        assert torch.equal(new["state_dict"][key], value), key
    assert all(torch.equal(new["gmm_sampler"][k], v) for k, v in old["gmm_sampler"].items())
    assert new["lineage"] == old["lineage"] and new["net_config"] == old["net_config"]
    latent_dim = old["net_config"]["latent_dim"]
    assert new["latent_pca"]["components"].shape == (STORED_COMPONENTS, latent_dim)
    assert torch.equal(new["test_faces"], old["test_faces"])
    assert (
        new["metrics"] == old["metrics"] and new["test_faces_source"] == old["test_faces_source"]
    )
    assert torch.equal(new["drift"]["val_nll"], old["drift"]["val_nll"])
    assert {"pca_gmm_sampler", "flow_sampler"} <= set(new)
    assert out.stat().st_size <= 15_000_000


@pytest.mark.slow
def test_package_stores_own_test_faces_and_predict_reconstructs_them(
    trained_run: Path, tmp_path: Path
) -> None:
    """A model trained on the bundled sample carries faces of that split's test part (none of
    its training faces) and predict reconstructs exactly those by default."""
    slim = tmp_path / "slim.ckpt"
    result = run_package(
        "--model", str(trained_run / "checkpoints" / "best.ckpt"), "--out", str(slim),
        "--components", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "32 of its 102 test faces stored" in result.stdout
    checkpoint = read_checkpoint(slim)
    assert {
        "net_config", "state_dict", "lineage", "gmm_sampler", "pca_gmm_sampler", "flow_sampler",
        "default_sampler", "latent_pca", "test_faces", "test_faces_source",
    } <= set(checkpoint)  # fmt: skip
    assert checkpoint["default_sampler"] == DEFAULT_SAMPLER
    assert re.search(r"pca_gmm fitted in [0-9.]+ s, flow fitted in [0-9.]+ s", result.stdout)
    assert "optimizer_states" not in checkpoint  # slim: nothing of the training state
    assert slim.stat().st_size < (trained_run / "checkpoints" / "best.ckpt").stat().st_size
    faces = checkpoint["test_faces"]
    assert faces.dtype == torch.uint8 and faces.shape == (32, 3, 64, 64)
    source = checkpoint["test_faces_source"]
    assert source["data_hash"] == checkpoint["lineage"]["data_hash"]
    assert source["source"] == "cats_sample.tar" and source["split"] == "test"
    splits, _ = ingested("bundled", source["seed"])
    assert pixel_hashes(faces) <= pixel_hashes(splits["test"])
    assert not pixel_hashes(faces) & pixel_hashes(splits["train"])

    out = tmp_path / "predict"
    predicted = run_predict(
        "--model", str(slim), "--n", "4", "--num-recon", "8", "--no-wandb", "--out", str(out)
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert f"{SAMPLER_NAMES[DEFAULT_SAMPLER]} stored in the checkpoint" in predicted.stdout
    assert "from the model's own test split (cats_sample.tar, seed 42)" in predicted.stdout
    grid = read_image(str(out / "reconstructions.png"))
    for i in range(8):
        assert torch.equal(grid[:, 2:66, 2 + 66 * i : 66 + 66 * i], faces[i])


def test_refresh_drift_refuses_a_split_that_is_not_the_models_own(tmp_path: Path) -> None:
    """The shipped model's validation faces are cats64's: the bundled sample's split could
    hold faces it trained on, so its drift statistics are not refreshed on it."""
    out = tmp_path / "refreshed.ckpt"
    result = run_package(
        "--model", str(SHIPPED_MODEL), "--out", str(out), "--refresh-drift", "--source", "bundled"
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("package_model: error:")
    assert "drift statistics are not refreshed" in lines[0]
    assert not out.exists()
