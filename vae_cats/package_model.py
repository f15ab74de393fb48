"""Turn a checkpoint (a training one, or an already packaged one) into a slim model for inference.

``python -m vae_cats.package_model --model RUN/checkpoints/best.ckpt --out my_model.ckpt``

Keeps only what inference needs (architecture, float16 network weights, lineage) and adds, from
the training split the model was trained on (its lineage's data source and seed, or
``--source``): the learned latent samplers (each kept as it is when ``--model`` already stores
it; the Gaussian mixture refitted when ``--components`` is given; the fit times printed), the
name of the default one, and the principal components of the training faces' posterior means;
and ``--test-faces`` faces of the model's own test split, which predict reconstructs by
default. The test faces are stored only when the split's data hash is the one in the model's
lineage, so they are faces the model did not train on. Writes atomically; an existing ``--out``
is replaced only with ``--force``. Every option is checked before any work.
``--refresh-drift`` instead recomputes only the drift statistics of an already packaged
``--model`` (on its own split; every other entry written back as read): for a model packaged
before the drift detector changed.
The work is ``vae_cats.packager.package`` (``refresh_drift``): this module parses, calls,
prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae_cats.cli import DefaultsHelpFormatter, bounded_int, run_command
from vae_cats.generate import DEFAULT_COMPONENTS
from vae_cats.packager import (
    DEFAULT_SAMPLER,
    DEFAULT_TEST_FACES,
    MAX_TEST_FACES,
    package,
    refresh_drift,
)
from vae_cats.samplers import LEARNED_SAMPLERS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="package_model",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--model", type=Path, required=True, help="checkpoint (.ckpt)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the slim model")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--source", default=None, help="training data; None: the one in the model's lineage"
    )
    parser.add_argument(
        "--components",
        type=bounded_int(1),
        default=None,
        help="fit the gmm sampler's mixture with this many components; None: keep the mixture "
        f"of an already packaged --model (its samples stay the same), else fit "
        f"{DEFAULT_COMPONENTS}",
    )
    parser.add_argument(
        "--default-sampler",
        choices=LEARNED_SAMPLERS,
        default=DEFAULT_SAMPLER,
        help="the sampler predict, the API and the page use unless told otherwise",
    )
    parser.add_argument(
        "--test-faces",
        type=bounded_int(0, MAX_TEST_FACES),
        default=DEFAULT_TEST_FACES,
        help="faces of the model's own test split to store for predict's reconstructions",
    )
    parser.add_argument(
        "--refresh-drift",
        action="store_true",
        help="only recompute the drift statistics of an already packaged --model on its own "
        "split; every other entry is written back as read (the sampler options are ignored)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``package_model``: returns 0, or 2 after one error line naming a bad input."""
    args = parse_args(argv)

    def call() -> int:
        if args.refresh_drift:
            result = refresh_drift(args.model, args.out, args.force, args.source)
        else:
            result = package(
                args.model,
                args.out,
                args.force,
                args.source,
                args.components,
                args.test_faces,
                args.default_sampler,
            )
        for warning in result.warnings:
            print(f"package_model: warning: {warning}", file=sys.stderr)
        size_mb = result.out.stat().st_size / 1e6
        print(f"wrote {result.out.resolve()} ({size_mb:.1f} MB): {result.summary}")
        return 0

    return run_command("package_model", call)


if __name__ == "__main__":
    sys.exit(main())
