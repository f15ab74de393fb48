"""vae_cats.predict as a notebook uses it: str paths, the documented five lines, and the same
pixels as the predict command for the same seed."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.io import read_image

import vae_cats
from tests.helpers import PROJECT_DIR
from vae_cats.checkpoint import SHIPPED_MODEL, load_vae, read_checkpoint
from vae_cats.faces import InputError
from vae_cats.images import to_uint8
from vae_cats.predict import PredictOptions, load_model, predict, sample_images


def documented_snippet() -> str:
    """The ```python block of docs/predict.md's "In Python" section."""
    page = (PROJECT_DIR / "docs" / "predict.md").read_text()
    section = page.split("## In Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/predict.md: no python block under 'In Python'"
    return match.group(1)


def test_checkpoint_functions_take_str_paths() -> None:
    """``load_vae("model.ckpt")`` died with AttributeError: 'str' object has no attribute
    'is_dir'."""
    net, lineage = load_vae(str(SHIPPED_MODEL))
    assert net.latent_dim == read_checkpoint(str(SHIPPED_MODEL))["net_config"]["latent_dim"]
    assert "data_hash" in lineage
    assert load_model(str(SHIPPED_MODEL)).path == SHIPPED_MODEL


def test_the_documented_snippet_is_the_package_docstring_and_runs(tmp_path: Path) -> None:
    """The five lines of docs/predict.md (also in ``vae_cats.__doc__``), run as they are in a
    fresh interpreter, write the picture ``predict_model.py --n 16 --seed 0`` writes."""
    snippet = documented_snippet()
    package_doc = "\n".join(line.removeprefix("    ") for line in vae_cats.__doc__.splitlines())
    assert snippet.strip() in package_doc
    assert len(snippet.strip().splitlines()) == 5
    result = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = read_image(str(tmp_path / "cats.png"))
    assert written.shape == (3, 2 + 2 * 66, 2 + 8 * 66)
    out = tmp_path / "predict"
    predict(PredictOptions(n=16, seed=0, out=out))
    assert torch.equal(written, read_image(str(out / "samples.png")))


def test_sample_images_are_the_pixels_of_predicts_single_pngs(tmp_path: Path) -> None:
    model = load_model()
    cats = sample_images(model, 3, seed=11, sampler="normal")
    assert cats.shape == (3, 3, 64, 64) and 0 <= float(cats.min()) <= float(cats.max()) <= 1
    result = predict(PredictOptions(n=3, seed=11, sampler="normal", out=tmp_path))
    assert any(line.startswith("3 samples from N(0, I)") for line in result.report)
    for i, image in enumerate(to_uint8(cats)):
        assert torch.equal(image, read_image(str(tmp_path / "samples" / f"sample_{i:03d}.png")))


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (PredictOptions(n=0), "--n"),
        (PredictOptions(seed=2**32), "--seed"),
        (PredictOptions(num_recon=257), "--num-recon"),
        (PredictOptions(sampler="vae"), "--sampler 'vae'"),
    ],
)
def test_predict_refuses_bad_options_before_writing(
    options: PredictOptions, named: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(InputError, match=re.escape(named)):
        predict(dataclasses.replace(options, out=out))
    assert not out.exists()
