"""Every config composes and builds; every experiment trains a few real steps."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from tests.helpers import EXPERIMENTS, FAST_TRAIN_OVERRIDES, PROJECT_DIR, run_train
from vae_cats.checkpoint import load_vae
from vae_cats.training.config_check import check_config
from vae_cats.training.lineage import register_resolvers
from vae_cats.training.train import resolve_trainer_precision

CONF = PROJECT_DIR / "conf"


def compose_config(tmp_path: Path, *overrides: str) -> DictConfig:
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train_model", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_config_composes_and_instantiates(experiment: str, tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, f"experiments={experiment}")
    check_config(cfg)
    net = instantiate(cfg.model)
    module = instantiate(cfg.lit_module, net=net)
    assert module.net is net
    # Every experiment names precision: auto, which the run resolves for its machine.
    assert cfg.trainer.precision == "auto"
    assert resolve_trainer_precision(cfg.trainer).value in ("32-true", "bf16-mixed")
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    assert instantiate(cfg.data).batch_size == cfg.data.batch_size


@pytest.mark.parametrize(
    "override",
    sorted(
        f"{p.parent.name}={p.stem}"
        for p in CONF.glob("*/*.yaml")
        if p.parent.name != "experiments"
    ),
)
def test_every_group_option_composes(override: str, tmp_path: Path) -> None:
    cfg = compose_config(tmp_path, override)
    group, _, option = override.partition("=")
    assert cfg[group] is not None, option
    check_config(cfg)  # root keys, group shapes, optimized_metric, output folders


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_trains_a_few_real_steps(experiment: str, tmp_path: Path) -> None:
    result = run_train(tmp_path, f"experiments={experiment}", *FAST_TRAIN_OVERRIDES)
    assert result.returncode == 0, result.stderr[-3000:]
    ssim = re.search(r"test SSIM: (\S+)", result.stdout)
    assert ssim and math.isfinite(float(ssim.group(1)))
    net, lineage = load_vae(tmp_path / "checkpoints" / "last.ckpt")
    assert lineage["config"]["seed"] == lineage["config"]["data"]["seed"]
    assert net.sample(2).shape == (2, 3, 64, 64)


@pytest.mark.slow
def test_same_seed_gives_the_same_first_steps(tmp_path: Path) -> None:
    states = []
    for run in ("a", "b"):
        result = run_train(tmp_path / run, "experiments=demo", "logger=csv", *FAST_TRAIN_OVERRIDES)
        assert result.returncode == 0, result.stderr[-3000:]
        states.append(load_vae(tmp_path / run / "checkpoints" / "last.ckpt")[0].state_dict())
    assert all((states[0][k] == states[1][k]).all() for k in states[0])
