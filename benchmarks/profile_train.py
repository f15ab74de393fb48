"""Profile training steps of an experiment: where the CPU time of a step goes.

    python benchmarks/profile_train.py --experiment exp1 --steps 20 [--warmup 5] [KEY=VALUE ...]

Builds the experiment's data module, network, LightningModule and Trainer from its Hydra
config (extra ``KEY=VALUE`` arguments are Hydra overrides, e.g. ``data.source=bundled``),
runs ``warmup + steps`` training steps under ``torch.profiler`` (no validation, logger or
checkpoints) and records the last ``steps``: the first ones warm oneDNN up.

Every operator is assigned to the phase of the innermost range it runs in:

- ``data``: Lightning fetching the next batch, moving it and ``on_after_batch_transfer``
  (uint8 to float, random flip);
- ``forward``: ``net.forward`` (encoder, reparameterisation, decoder);
- ``loss``: ``net.loss_function`` (SSIM, L1, KL);
- ``backward: net`` and ``backward: loss``: Lightning's ``backward`` (autograd), split by the
  forward operator each backward operator differentiates (autograd sequence numbers);
- ``optimiser``: Lightning's ``optimizer_step`` outside the closure (gradient clipping, Adam)
  and ``optimizer_zero_grad``;
- ``other``: the rest of the loop (logging in ``training_step``, hooks, Python).

The ranges are ``record_function`` ranges: Lightning's profiler actions (opened by
``RangeProfiler``) and two around the network's ``forward`` and ``loss_function``. Writes
``OUT/trace.json`` (Chrome trace format: open it in https://ui.perfetto.dev or
chrome://tracing) and ``OUT/profile.md``, and prints the tables: CPU time per phase, then the
top operators by self CPU time with their phase. Self time of a range itself (not of an
operator under it) is the Python in that range, listed as ``[python] <range>``.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.profilers import Profiler
from torch.autograd import profiler as autograd_profiler

# Run as `python benchmarks/<script>.py`: the project root on the path for `benchmarks.*`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import common  # noqa: E402
from vae_cats.fileio import atomic_write_bytes  # noqa: E402

FORWARD_RANGE = "[net] forward"
LOSS_RANGE = "[net] loss_function"
PHASES = (
    "data",
    "forward",
    "loss",
    "backward: net",
    "backward: loss",
    "backward",
    "optimiser",
    "other",
)


def phase_of_range(name: str) -> str | None:
    """The phase a range name opens, or None for a range that opens no phase."""
    if name == FORWARD_RANGE:
        return "forward"
    if name == LOSS_RANGE:
        return "loss"
    if name.endswith(".backward") and name.startswith("[Strategy]"):
        return "backward"
    if name.endswith((".optimizer_step", ".optimizer_zero_grad")) and "[Strategy]" not in name:
        return "optimiser"
    if name == "[_TrainingEpochLoop].train_dataloader_next" or name.endswith(".batch_to_device"):
        return "data"
    return None


class RangeProfiler(Profiler):
    """A Lightning profiler that only opens a ``record_function`` range per action, so that
    ``torch.profiler`` sees Lightning's structure (data fetch, backward, optimiser step)."""

    def __init__(self) -> None:
        super().__init__()
        self._open: dict[str, list[Any]] = defaultdict(list)

    def start(self, action_name: str) -> None:
        record = autograd_profiler.record_function(action_name)
        record.__enter__()
        self._open[action_name].append(record)

    def stop(self, action_name: str) -> None:
        if self._open[action_name]:
            self._open[action_name].pop().__exit__(None, None, None)

    def summary(self) -> str:
        return ""


def traced(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``fn`` run inside a ``record_function`` range called ``name``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with autograd_profiler.record_function(name):
            return fn(*args, **kwargs)

    return wrapper


class StepProfiler(pl.Callback):
    """Advances the ``torch.profiler`` schedule after every training step."""

    def __init__(self, prof: torch.profiler.profile) -> None:
        self.prof = prof

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.prof.step()


def phase_of_event(event: Any) -> str:
    """Phase of a profiler event: that of the innermost enclosing range that opens one."""
    node = event
    while node is not None:
        phase = phase_of_range(node.name)
        if phase is not None:
            return phase
        node = node.cpu_parent
    return "other"


def backward_source(event: Any, forward_phase: dict[int, str]) -> str:
    """``backward: net`` or ``backward: loss``: the phase whose forward operator created the
    autograd node this backward event runs for (matched by autograd sequence number)."""
    node = event
    while node is not None:
        if node.name.startswith("autograd::engine::evaluate_function"):
            source = forward_phase.get(node.sequence_nr)
            if source is not None:
                return "backward: net" if source == "forward" else "backward: loss"
        node = node.cpu_parent
    return "backward"


def summarise(events: list[Any]) -> dict[str, Any]:
    """Self CPU time (microseconds) per phase and per (phase, operator), and the steps seen.

    Ranges (events whose name is a Lightning action or a ``[net]`` range) count under
    ``[python] <name>``: their self time is Python between operators. Backward time is split
    by the forward operator it differentiates: the network's or the loss's.
    """
    phases = [phase_of_event(event) for event in events]
    forward_phase = {
        e.sequence_nr: p
        for e, p in zip(events, phases, strict=True)
        if p in ("forward", "loss") and e.sequence_nr >= 0
    }
    per_phase: dict[str, float] = defaultdict(float)
    per_op: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    step_us: list[float] = []
    for event, phase in zip(events, phases, strict=True):
        # torch names the step ranges "ProfilerStep*" in events(), "ProfilerStep#N" in traces.
        name = "ProfilerStep" if event.name.startswith("ProfilerStep") else event.name
        if name == "ProfilerStep":
            step_us.append(event.cpu_time_total)
        if name.startswith(("[", "ProfilerStep", "run_training")):
            name = f"[python] {name}"
        if phase == "backward":
            phase = backward_source(event, forward_phase)
        per_phase[phase] += event.self_cpu_time_total
        per_op[(phase, name)][0] += 1
        per_op[(phase, name)][1] += event.self_cpu_time_total
    return {"per_phase": dict(per_phase), "per_op": dict(per_op), "step_us": step_us}


def tables(summary: dict[str, Any], batch_size: int, top: int) -> str:
    """Markdown: time per phase (ms per step, share), then the top operators."""
    steps = max(1, len(summary["step_us"]))
    total = sum(summary["per_phase"].values()) or 1.0
    step_ms = sum(summary["step_us"]) / steps / 1000
    lines = [
        f"{steps} steps, {step_ms:.1f} ms per step (wall, profiler on), "
        f"{batch_size * 1000 / step_ms:.0f} images/s",
        "",
        "| phase | self CPU ms / step | share |",
        "|---|---:|---:|",
    ]
    for phase in PHASES:
        us = summary["per_phase"].get(phase, 0.0)
        if phase == "backward" and not us:
            continue  # every backward operator was matched to the net or the loss
        lines.append(f"| {phase} | {us / steps / 1000:.2f} | {us / total:.1%} |")
    lines += [
        "",
        "| operator | phase | calls / step | self CPU ms / step | share |",
        "|---|---|---:|---:|---:|",
    ]
    ranked = sorted(summary["per_op"].items(), key=lambda item: -item[1][1])[:top]
    for (phase, name), (calls, us) in ranked:
        lines.append(
            f"| `{name}` | {phase} | {calls / steps:.0f} | {us / steps / 1000:.2f} "
            f"| {us / total:.1%} |"
        )
    return "\n".join(lines)


def build(
    experiment: str,
    overrides: list[str],
    total_steps: int,
    callbacks: list[pl.Callback],
    root_dir: Path,
) -> tuple[pl.Trainer, pl.LightningModule, pl.LightningDataModule, int]:
    """The experiment's trainer (training only, ``total_steps`` steps), module and data."""
    cfg = common.experiment_config(experiment, overrides)
    net = instantiate(cfg.model)
    # Instance attributes shadow the methods: the module's calls go through the ranges.
    net.forward = traced(net.forward, FORWARD_RANGE)
    net.loss_function = traced(net.loss_function, LOSS_RANGE)
    module = instantiate(cfg.lit_module, net=net)
    datamodule = instantiate(cfg.data)
    trainer = common.bare_trainer(
        cfg.trainer,
        default_root_dir=str(root_dir),
        max_steps=total_steps,
        val_check_interval=None,
        limit_train_batches=None,
        profiler=RangeProfiler(),
        callbacks=callbacks,
    )
    return trainer, module, datamodule, int(cfg.data.batch_size)


def main(argv: list[str] | None = None) -> None:
    parser = common.steps_parser(__doc__.splitlines()[0], steps=20, warmup=5, what="profiled")
    parser.add_argument("--top", type=int, default=25, help="operators listed")
    parser.add_argument("--out", type=Path, default=None, help="default outputs/profile/<exp>")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    out = args.out or common.PROJECT_DIR / "outputs" / "profile" / args.experiment
    load_before = common.load_average()
    result: dict[str, Any] = {}

    def on_trace_ready(prof: torch.profiler.profile) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace.json"
            prof.export_chrome_trace(str(trace))
            atomic_write_bytes(out / "trace.json", trace.read_bytes())
        result["summary"] = summarise(list(prof.events()))

    prof = torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU],
        schedule=torch.profiler.schedule(wait=0, warmup=args.warmup, active=args.steps, repeat=1),
        on_trace_ready=on_trace_ready,
    )
    trainer, module, datamodule, batch_size = build(
        args.experiment, args.overrides, args.warmup + args.steps, [StepProfiler(prof)], out
    )
    start = time.perf_counter()
    with prof:
        trainer.fit(module, datamodule=datamodule)
    elapsed = time.perf_counter() - start
    header = (
        f"experiment {args.experiment} {' '.join(args.overrides)}".rstrip()
        + f"; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"precision {trainer.precision}; load average (1, 5, 15 min) before {load_before}; "
        f"after {common.load_average()}; fit {elapsed:.0f} s"
    )
    text = header + "\n\n" + tables(result["summary"], batch_size, args.top)
    atomic_write_bytes(out / "profile.md", (text + "\n").encode())
    print(text)
    print(f"\nChrome trace (open in https://ui.perfetto.dev): {out / 'trace.json'}")


if __name__ == "__main__":
    main()
