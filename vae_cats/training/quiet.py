"""Known, harmless messages of the libraries a training run uses, silenced where they are
raised: each by its own logger or warning category and its own text, never all warnings.

- Lightning's "Tip: ... try installing [litlogger]" at every Trainer start (an advert);
- torch's "No CUDA runtime is found, using CUDA_HOME=..." when a CUDA toolkit folder exists on
  a machine without a GPU (nothing here builds CUDA extensions);
- torch's FutureWarning "`isinstance(treespec, LeafSpec)` is deprecated", raised by
  Lightning's own pytree helper at every optimiser step's closure, not by this project;
- alembic's "setup plugin ..." (seven INFO lines, which Hydra's log format prints as
  ``[HYDRA] setup plugin ...``) when an Optuna sweep opens its study database.

This module imports no torch or Lightning, so the entry point installs the filters before
those libraries are imported (and log at import).
"""

from __future__ import annotations

import logging
import warnings

# Logger name -> fragments of the messages it drops.
_NOISY_LOGGERS = {
    "pytorch_lightning.utilities.rank_zero": ("try installing [litlogger]",),
    "torch.utils.cpp_extension": ("No CUDA runtime is found",),
    "alembic.runtime.plugins": ("setup plugin",),
}


class _DropMessages(logging.Filter):
    """Drops the records whose message holds one of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def silence_known_noise() -> None:
    """Install the filters above; safe to call more than once."""
    for name, fragments in _NOISY_LOGGERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.",
    )
