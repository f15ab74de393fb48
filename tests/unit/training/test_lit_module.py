"""VAELitModule: evaluation leaves the training random streams alone, the [0, 1] check at the
first batch only, AdamW without decay steps as Adam, the compiled SSIM loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vae_cats.data.store import load_splits
from vae_cats.images import to_float
from vae_cats.model import ConvVAE
from vae_cats.training.lit_module import VAELitModule


@pytest.fixture
def faces(real_folder: Path, tmp_path: Path) -> torch.Tensor:
    """Real cat faces (N, 3, 64, 64) in [0, 1]."""
    from vae_cats.data.datamodule import CatFacesDataModule

    dm = CatFacesDataModule(source=str(real_folder), processed_dir=str(tmp_path))
    dm.prepare_data()
    return to_float(load_splits(dm.processed_dir)["train"][:8])


def module(**kwargs: object) -> VAELitModule:
    torch.manual_seed(0)
    return VAELitModule(
        ConvVAE(latent_dim=8, hidden_channels=[8, 16]),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        **kwargs,  # type: ignore[arg-type]
    )


def test_validation_draws_fixed_noise_and_leaves_the_global_generator_alone(
    faces: torch.Tensor,
) -> None:
    lit = module()
    codes: list[torch.Tensor] = []
    lit.net.register_forward_hook(lambda net, args, out: codes.append(out.z))
    for seed in (1, 2):
        torch.manual_seed(seed)
        before = torch.get_rng_state()
        with pytest.warns(UserWarning, match="self.log"):  # no trainer: the logs go nowhere
            lit.validation_step(faces, 0)
        assert torch.equal(torch.get_rng_state(), before)
    # The same reparameterisation noise whatever the global state: comparable val losses.
    assert torch.equal(codes[0], codes[1])


def test_the_unit_range_check_runs_at_an_epochs_first_batch_only(faces: torch.Tensor) -> None:
    lit = module()
    with pytest.raises(ValueError, match=r"batch must hold values in \[0, 1\]"):
        lit._prepare(faces * 255, 0)
    assert lit._prepare(faces * 255, 1).shape == faces.shape  # no read-back on other steps


def test_adamw_without_weight_decay_takes_the_same_steps_as_adam(faces: torch.Tensor) -> None:
    final = []
    for optimizer in (torch.optim.Adam, torch.optim.AdamW):
        torch.manual_seed(0)
        net = ConvVAE(latent_dim=8, hidden_channels=[8, 16])
        opt = optimizer(net.parameters(), lr=1e-3, weight_decay=0.0)
        for _ in range(3):
            opt.zero_grad()
            net.loss_function(faces, net(faces), 1e-3).loss.backward()
            opt.step()
        final.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(*final)


def test_an_unknown_scheduler_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="scheduler_interval"):
        module(scheduler_interval="batch")


@pytest.mark.slow
def test_the_compiled_ssim_loss_matches_eager_and_repeats_itself(faces: torch.Tensor) -> None:
    lit = module()
    out = lit.net(faces)
    eager = lit.net.loss_function(faces, out, 1e-3)
    lit.net.compile_loss()
    compiled = [lit.net.loss_function(faces, out, 1e-3) for _ in range(2)]
    assert torch.allclose(compiled[0].recon_loss, eager.recon_loss, atol=1e-6)
    assert torch.equal(compiled[0].loss, compiled[1].loss)
    # A smaller last batch compiles once more and still matches.
    tail = lit.net.loss_function(faces[:3], lit.net(faces[:3]), 1e-3)
    assert torch.isfinite(tail.loss)


@pytest.mark.parametrize(
    ("compile_loss", "precision", "compiled"),
    [
        ("auto", "bf16-mixed", True),
        ("auto", "32-true", False),
        (True, "32-true", True),
        (False, "bf16-mixed", False),
    ],
)
def test_compile_loss_auto_compiles_only_under_bf16(
    faces: torch.Tensor, compile_loss: object, precision: str, compiled: bool
) -> None:
    import pytorch_lightning as pl

    lit = module(compile_loss=compile_loss)
    eager_loss = lit.net._ssim_loss
    lit.trainer = pl.Trainer(accelerator="cpu", precision=precision, logger=False)  # type: ignore[arg-type]
    lit.setup("fit")
    lit.setup("fit")  # Lightning calls setup again for test: compiled once at most
    assert (lit.net._ssim_loss is not eager_loss) is compiled


def test_an_unknown_compile_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="compile_loss must be true, false or auto"):
        module(compile_loss="yes")
