"""Train the cat-face VAE: ``python vae_cats/train_model.py experiments=exp1 [key=value ...]``.

Bad input (a config value, an unknown key, a misspelt group such as ``experiment=exp1``, an
unwritable output folder, a checkpoint, a fresh run over an earlier run's checkpoints) is one
line on stderr and exit code 2, before any work; a NaN or infinite loss is one line and exit
code 1. In a multirun, a diverged job, or one whose model, optimiser or data cannot be built
(``model.latent_dim=32`` where exp1's bottleneck needs multiples of 64), writes a failed
``result.yaml`` and raises instead, so the sweeper records that trial as failed and goes on
with the others. Ctrl-C (SIGINT) or SIGTERM during training saves
``last.ckpt`` at the current step, prints the command that resumes it and exits with
128 + the signal's number.
"""

from __future__ import annotations

import shlex
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vae_cats.training.config_check import (
    ConfigError,
    check_config,
    check_fresh_run,
    check_group_names,
    exit_with_error,
)
from vae_cats.training.lineage import name_sweep_trial, register_resolvers
from vae_cats.training.quiet import silence_known_noise

register_resolvers()
# Overrides a resume command leaves out: it sets resume=true itself, and a ckpt_path would
# win over it (the run goes on from its own last.ckpt).
_NOT_FOR_RESUME = ("resume", "ckpt_path", "overwrite")


def resume_command() -> str:
    """The shell command that resumes this Hydra job from its ``last.ckpt``: the same script
    and overrides, plus ``resume=true`` and the job's own ``hydra.run.dir``."""
    hydra_cfg = HydraConfig.get()
    kept = [
        o
        for o in hydra_cfg.overrides.task
        if o.lstrip("+~").split("=", 1)[0] not in _NOT_FOR_RESUME
    ]
    run_dir = f"hydra.run.dir={hydra_cfg.runtime.output_dir}"
    return shlex.join(["python", sys.argv[0], *kept, "resume=true", run_dir])


@hydra.main(config_path="../conf", config_name="train_model", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the final value of ``cfg.optimized_metric`` (a validation
    metric such as ``val/ssim``) for sweepers, None when no validation ran."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        check_config(cfg, hydra_cfg.sweeper.get("direction") if multirun else None)
        if not multirun:
            check_fresh_run(cfg)
    except ConfigError as err:
        exit_with_error(str(err), 2)
    # Heavy imports once the config is known to be usable: a refusal takes a second. The
    # libraries' known noise is filtered first, as some of it is logged at import.
    silence_known_noise()
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    from vae_cats.checkpoint import CheckpointError
    from vae_cats.training.callbacks import NonFiniteLossError, TrainingInterrupted
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
    except TrainingInterrupted as err:
        save_job_result("interrupted", cfg.optimized_metric, None, str(err))
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            print(f"train_model: {err}", file=sys.stderr)
            print(f"train_model: resume with: {resume_command()}", file=sys.stderr)
        sys.exit(128 + err.signum)
    value = results.get(cfg.optimized_metric)
    save_job_result(
        "finished",
        cfg.optimized_metric,
        value,
        "",
        results["warnings"],
        best_checkpoint=results["best_model_path"],
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
    try:
        check_group_names(sys.argv[1:])
    except ConfigError as err:
        exit_with_error(str(err), 2)
    main()
