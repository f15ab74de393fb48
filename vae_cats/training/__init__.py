"""Training with Lightning under Hydra configs: the only layer (with ``data.datamodule``) that
imports Lightning, Hydra, OmegaConf or torchdata."""
