"""Train the cat-face VAE: ``python vae_cats/train_model.py experiments=exp1 [key=value ...]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from vae_cats.utils import register_resolvers

register_resolvers()


@hydra.main(config_path="../conf", config_name="train_model", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the best validation SSIM for sweepers."""
    from vae_cats.training import train  # heavy imports after Hydra has parsed the command line

    results = train(cfg)
    print(f"best checkpoint: {results['best_model_path']}")
    if "test/ssim" in results:
        print(f"test SSIM: {results['test/ssim']:.4f}  test PSNR: {results['test/psnr']:.2f} dB")
    return results.get("val/ssim")


if __name__ == "__main__":
    main()
