"""Train the cat-face VAE: ``python vae_cats/train_model.py experiments=exp1 [key=value ...]``.

Bad input (a config value, an unknown key, an unwritable output folder, a checkpoint) is one
line on stderr and exit code 2, before any work; a NaN or infinite loss is one line and exit
code 1. In a multirun, a diverged job, or one whose model, optimiser or data cannot be built
(``model.latent_dim=32`` where exp1's bottleneck needs multiples of 64), writes a failed
``result.yaml`` and raises instead, so the sweeper records that trial as failed and goes on
with the others.
"""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_cats.training.config_check import ConfigError, check_config, exit_with_error
from vae_cats.training.lineage import name_sweep_trial, register_resolvers

register_resolvers()


@hydra.main(config_path="../conf", config_name="train_model", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the final value of ``cfg.optimized_metric`` (a validation
    metric such as ``val/ssim``) for sweepers, None when no validation ran."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        check_config(cfg, hydra_cfg.sweeper.get("direction") if multirun else None)
    except ConfigError as err:
        exit_with_error(str(err), 2)
    # Heavy imports once the config is known to be usable: a refusal takes a second.
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from vae_cats.checkpoint import CheckpointError
    from vae_cats.training.callbacks import NonFiniteLossError
    from vae_cats.training.lineage import save_job_result
    from vae_cats.training.train import train

    name_sweep_trial(cfg)
    try:
        results = train(cfg)
    except (ConfigError, CheckpointError, FileNotFoundError, NonFiniteLossError) as err:
        if multirun:
            save_job_result("failed", cfg.optimized_metric, None, str(err))
            raise
        if isinstance(err, NonFiniteLossError):
            save_job_result("failed", cfg.optimized_metric, None, str(err))
            exit_with_error(str(err), 1)
        exit_with_error(str(err), 2)
    value = results.get(cfg.optimized_metric)
    save_job_result(
        "finished", cfg.optimized_metric, value, "", best_checkpoint=results["best_model_path"]
    )
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
        print(f"best checkpoint: {results['best_model_path']}")
        print(f"global step: {results['global_step']}")
        shown = "not measured (no validation ran)" if value is None else f"{value:.4f}"
        print(f"{cfg.optimized_metric} (optimized_metric): {shown}")
        if "test/ssim" in results:
            print(
                f"test SSIM: {results['test/ssim']:.4f}  test PSNR: {results['test/psnr']:.2f} dB"
            )
    return value


if __name__ == "__main__":
    main()
