"""The ``--variant NAME=KEY=VALUE,KEY=VALUE`` option of explore.py and bench_train_step.py."""

from __future__ import annotations

import re


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """Name and Hydra overrides of one ``--variant``; commas inside ``[...]`` belong to a list
    value (``wide=model.hidden_channels=[48,96],model.beta=2e-5`` is two overrides).
    ``NAME=`` alone is the experiment as it is."""
    name, _, overrides = spec.partition("=")
    return name, [o for o in re.split(r",(?![^\[]*\])", overrides) if o]
