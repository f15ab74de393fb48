"""Train the cat-face VAE: ``python vae_cats/train_model.py experiments=exp1 [key=value ...]``.

Bad input (a config value, a checkpoint) is one line on stderr and exit code 2; a NaN or
infinite loss is one line and exit code 1. In a multirun, a diverged job raises instead, so
the sweeper records that trial as failed and goes on with the others.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_cats.training.lineage import register_resolvers

register_resolvers()


def _fail(message: str, code: int) -> None:
    print(f"train_model: error: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(config_path="../conf", config_name="train_model", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the final validation SSIM for sweepers."""
    # Heavy imports after Hydra has parsed the command line.
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from vae_cats.checkpoint import CheckpointError
    from vae_cats.training.callbacks import NonFiniteLossError
    from vae_cats.training.config_check import ConfigError
    from vae_cats.training.lineage import save_job_result
    from vae_cats.training.train import train

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = train(cfg)
    except (ConfigError, CheckpointError, FileNotFoundError) as err:
        _fail(str(err), 2)
    except NonFiniteLossError as err:
        save_job_result("failed", None, str(err))
        if multirun:
            raise
        _fail(str(err), 1)
    ssim = results.get("val/ssim")
    save_job_result("finished", ssim, "")
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
        print(f"best checkpoint: {results['best_model_path']}")
        print(f"global step: {results['global_step']}")
        if "test/ssim" in results:
            print(
                f"test SSIM: {results['test/ssim']:.4f}  test PSNR: {results['test/psnr']:.2f} dB"
            )
    return ssim


if __name__ == "__main__":
    main()
