"""Refusing a bad training config before anything trains, with one line naming the key.

One place per concern: the constructors (``ConvVAE``, ``VAELitModule``, torch optimisers,
``Trainer``) are the schema of the group nodes. Their type hints give the types, checked
here against the config before instantiation; their own ``ValueError``s give the allowed
values, raised when ``training.train`` builds the model, optimiser and scheduler once
before training; this module only turns either into ``ConfigError("<full.key>: <what is
wrong>")``. The root keys of ``conf/train_model.yaml``, the shape of each group, the
optimised metric and every output folder are checked by ``check_config`` before that.
"""

from __future__ import annotations

import difflib
import inspect
import re
import sys
import tempfile
import types
import typing
from collections import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig

_SIMPLE = (bool, int, float, str, type(None), list, tuple, dict)
# Every root key of conf/train_model.yaml and its type; any other root key is refused.
_ROOT_TYPES: dict[str, Any] = {
    "seed": int,
    "tags": list,
    "ckpt_path": str | None,
    "resume": bool,
    "overwrite": bool,
    "checkpoint_dir": str,
    "test": bool,
    "optimized_metric": str,
    "hparams_search": dict | None,
}
# The keys of hparams_search: the search's name, and the study and trial number of one trial.
_SEARCH_KEYS = ("name", "study", "trial")
# The seeds numpy (and so Lightning's seed_everything) accepts: 32-bit unsigned.
_MAX_SEED = 2**32 - 1
# Targets whose **kwargs go on to another callable, whose signature then checks them.
_FORWARDS_KWARGS = {
    "pytorch_lightning.loggers.WandbLogger": "wandb.init",
    "lightning.pytorch.loggers.WandbLogger": "wandb.init",
}
# Groups building one object (a ``_target_`` node), and groups of named optional objects.
OBJECT_GROUPS = ("data", "model", "lit_module", "trainer")
LIST_GROUPS = ("callbacks", "logger")
# Every config group of conf/ that a command line selects (``experiments=exp1``).
CONFIG_GROUPS = (*OBJECT_GROUPS, *LIST_GROUPS, "experiments", "hparams_search")
# Trainer limits whose value 0 trains nothing (Lightning accepts them and "finishes").
_NOTHING_TRAINED = ("max_epochs", "max_steps", "limit_train_batches")
# What ``train_model.main`` may return for a sweeper: the validation metrics VAELitModule
# logs every epoch, each with the direction that improves it. Test metrics are left out on
# purpose: a search tuned on the test split would report an optimistic score.
VAL_METRICS = {
    "val/ssim": "maximize",
    "val/psnr": "maximize",
    "val/loss": "minimize",
    "val/recon_loss": "minimize",
    "val/kl": "minimize",
}


class ConfigError(ValueError):
    """A config value that cannot work; the message starts with its full key."""


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits the type hint: True, False, or None when the hint is beyond
    what a config value can be checked against (classes, callables)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_matches(value, arg) for arg in typing.get_args(hint)]
        if any(v is True for v in verdicts):
            return True
        return False if all(v is False for v in verdicts) else None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin is not None:
        hint = origin
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (list, tuple, typing.Sequence, typing.Iterable, abc.Sequence, abc.Iterable):
        return isinstance(value, list | tuple | ListConfig)
    if hint is dict:
        return isinstance(value, dict | DictConfig)
    if isinstance(hint, type) and hint in _SIMPLE:
        return isinstance(value, hint)
    return None


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _schema(target: Callable[..., Any]) -> tuple[list[str], bool, dict[str, Any]]:
    """Argument names, whether it takes ``**kwargs``, and type hints of a class's
    ``__init__`` or of a function."""
    call: Callable[..., Any] = target.__init__ if inspect.isclass(target) else target
    parameters = inspect.signature(call).parameters.values()
    names = [p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
    try:
        hints = typing.get_type_hints(call)
    except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks only
        hints = {}
    return names, takes_any, hints


def check_types(node: DictConfig, key: str) -> None:
    """Check every argument of every ``_target_`` node under ``node`` against the type hints
    of the target's signature; unknown argument names are refused too. A target whose
    ``**kwargs`` go on to another callable (``WandbLogger`` to ``wandb.init``) has its other
    keys checked against that callable.

    Raises:
        ConfigError: Naming the full key, the expected type and the value found.
    """
    if "_target_" in node:
        try:
            target = get_method(node._target_)
        except ImportError:
            raise ConfigError(f"{key}._target_: cannot import {node._target_}") from None
        names, takes_any, hints = _schema(target)
        if takes_any and node._target_ in _FORWARDS_KWARGS:
            more, takes_any, more_hints = _schema(get_method(_FORWARDS_KWARGS[node._target_]))
            names += [name for name in more if name not in names]
            hints = {**more_hints, **hints}
        for name in map(str, node):
            if name.startswith("_"):
                continue
            full = f"{key}.{name}"
            if name not in names and not takes_any:
                raise ConfigError(
                    f"{full}: unknown key for {node._target_} (it takes: {', '.join(names)})"
                )
            value = node[name]
            if isinstance(value, DictConfig) and "_target_" in value:
                check_types(value, full)
                continue
            if name in hints and _matches(value, hints[name]) is False:
                raise ConfigError(f"{full}: expected {_type_name(hints[name])}, got {value!r}")
        return
    for name in map(str, node):
        value = node[name]
        if isinstance(value, DictConfig):
            check_types(value, f"{key}.{name}" if key else name)


def check_root(cfg: DictConfig) -> None:
    """Types of the root keys (``seed``, ``resume``, ``test``, ``ckpt_path``, ...)."""
    for name, hint in _ROOT_TYPES.items():
        if name in cfg and _matches(cfg[name], hint) is False:
            raise ConfigError(f"{name}: expected {_type_name(hint)}, got {cfg[name]!r}")
    if "seed" in cfg and not 0 <= cfg.seed <= _MAX_SEED:
        raise ConfigError(f"seed: must be in [0, {_MAX_SEED}] (numpy's range), got {cfg.seed}")


def _root_cause(err: BaseException) -> BaseException:
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def _full_key(node: DictConfig, key: str, message: str) -> str:
    """``key.arg`` when the message names exactly one argument of the node (by name, or by
    its value), else ``key``."""
    words = set(re.findall(r"[A-Za-z_]\w*", message))
    names = [str(n) for n in node if not str(n).startswith("_") and str(n) in words]
    if len(names) != 1:
        names = [
            str(n)
            for n in node
            if not str(n).startswith("_")
            and not isinstance(node[n], DictConfig | ListConfig)
            and re.search(rf"(?<![\w.]){re.escape(str(node[n]))}(?![\w.])", message)
        ]
    return f"{key}.{names[0]}" if len(names) == 1 else key


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``, its failure turned into a one-line ``ConfigError``."""
    try:
        return instantiate(node, **kwargs)
    except (InstantiationException, ValueError, TypeError) as err:
        cause = _root_cause(err)
        message = str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)
        raise ConfigError(f"{_full_key(node, key, message)}: {message}") from None


def call(node: DictConfig, key: str, factory: Callable[..., Any], **kwargs: Any) -> Any:
    """``factory(**kwargs)`` (a partial built from ``node``), failures as ``ConfigError``."""
    try:
        return factory(**kwargs)
    except (ValueError, TypeError) as err:
        message = str(err).strip().splitlines()[0]
        raise ConfigError(f"{_full_key(node, key, message)}: {message}") from None


def check_keys(cfg: DictConfig) -> None:
    """Root keys and group shapes: no key outside ``_ROOT_TYPES`` and the groups; each object
    group a ``_target_`` node; each entry of ``callbacks`` and ``logger`` a ``_target_`` node
    or null; ``hparams_search`` only its ``name``, ``study`` and ``trial`` (the last two set
    by the study sweeper for each trial).

    Raises:
        ConfigError: Naming the first unknown or misshapen key.
    """
    known = [*_ROOT_TYPES, *OBJECT_GROUPS, *LIST_GROUPS]
    for name in map(str, cfg):
        if name not in known and name != "hydra":  # hydra: present in composed test configs
            raise ConfigError(f"{name}: unknown key (root keys are: {', '.join(known)})")
    for group in OBJECT_GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"{group}: expected a config node with _target_, got {node!r}")
    for group in LIST_GROUPS:
        node = cfg.get(group)
        if node is None:
            continue
        if not isinstance(node, DictConfig):
            raise ConfigError(f"{group}: expected named nodes with _target_, got {node!r}")
        for name in map(str, node):
            entry = node[name]
            if entry is not None and not (isinstance(entry, DictConfig) and "_target_" in entry):
                raise ConfigError(
                    f"{group}.{name}: expected a node with _target_ (or null), got {entry!r}"
                )
    search = cfg.get("hparams_search")
    for name in map(str, search or {}):
        if name not in _SEARCH_KEYS:
            raise ConfigError(
                f"hparams_search.{name}: unknown key (hparams_search takes: "
                f"{', '.join(_SEARCH_KEYS)})"
            )


def check_optimized_metric(metric: Any, direction: Any = None) -> None:
    """``optimized_metric`` names a validation metric the module logs, and a sweeper's
    ``direction`` (``maximize``/``minimize``, when it has one) improves it.

    Raises:
        ConfigError: Naming ``optimized_metric`` or ``hydra.sweeper.direction``.
    """
    if metric not in VAL_METRICS:
        raise ConfigError(
            f"optimized_metric: {metric!r} is not a logged validation metric "
            f"(choose one of: {', '.join(VAL_METRICS)})"
        )
    if isinstance(direction, str) and direction != VAL_METRICS[metric]:
        raise ConfigError(
            f"hydra.sweeper.direction: {direction} would make {metric} worse "
            f"({VAL_METRICS[metric]} it, or optimise another metric)"
        )


def check_writable(key: str, folder: str | Path) -> None:
    """``folder`` exists as a folder, or can be created: a folder is made and removed in its
    nearest existing ancestor (a real write, since permission bits do not bind root and do
    not describe read-only mounts or /proc). Nothing is left behind.

    Raises:
        ConfigError: Naming ``key`` and the folder that cannot be written.
    """
    path = Path(folder).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{key}: cannot write {path}: {existing} is a file, not a folder")
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".write-check-").cleanup()
    except OSError as err:
        raise ConfigError(
            f"{key}: cannot write {path}: creating a folder in {existing} failed ({err.strerror})"
        ) from None


def _output_folders(node: DictConfig, key: str) -> list[tuple[str, Any]]:
    """(full key, value) of every output folder below ``node``: keys ``dirpath`` or
    ``*_dir``; a node's own keys before its children's."""
    own, nested = [], []
    for name in map(str, node):
        if not key and name == "hydra":  # composed test configs; Hydra's folders: StartCheck
            continue
        full = f"{key}.{name}" if key else name
        value = node[name]
        if isinstance(value, DictConfig):
            nested += _output_folders(value, full)
        elif (name == "dirpath" or name.endswith("_dir")) and isinstance(value, str | Path):
            own.append((full, value))
    return own + nested


def check_output_folders(cfg: DictConfig) -> None:
    """Every output folder of the config (``checkpoint_dir``, ``data.processed_dir``, the
    callbacks' and loggers' folders, ...) can be written, checked before any work. A folder
    reached through another key (``callbacks.model_checkpoint.dirpath: ${checkpoint_dir}``)
    is checked, and named, once: under the key the user sets.

    Raises:
        ConfigError: Naming the first key whose folder cannot be written.
    """
    seen: set[Path] = set()
    for key, value in _output_folders(cfg, ""):
        path = Path(value).absolute()
        if path not in seen:
            check_writable(key, path)
            seen.add(path)


def check_run_length(trainer: DictConfig) -> None:
    """A trainer that would train something: ``max_epochs``, ``max_steps`` and
    ``limit_train_batches`` are not 0 (Lightning would run the sanity check and the test,
    report a score of the untrained weights and exit 0).

    Raises:
        ConfigError: Naming the key that is 0.
    """
    for name in _NOTHING_TRAINED:
        value = trainer.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
            raise ConfigError(
                f"trainer.{name}: 0 trains nothing (give a positive number, or leave it out)"
            )


def check_fresh_run(cfg: DictConfig) -> None:
    """A run that starts fresh (no ``resume=true``, no ``ckpt_path``) does not write beside
    the checkpoints of an earlier run in ``checkpoint_dir`` unless ``overwrite=true``: its
    own ``best.ckpt`` and ``last.ckpt`` would replace them one by one, mixing two runs.

    Raises:
        ConfigError: Naming ``checkpoint_dir``, the files found and the three ways on.
    """
    if cfg.get("resume") or cfg.get("ckpt_path") or cfg.get("overwrite"):
        return
    folder = Path(str(cfg.get("checkpoint_dir", ""))) if cfg.get("checkpoint_dir") else None
    found = sorted(p.name for p in folder.glob("*.ckpt")) if folder and folder.is_dir() else []
    if found:
        raise ConfigError(
            f"checkpoint_dir: {folder} already holds checkpoints of an earlier run "
            f"({', '.join(found)}): add resume=true to go on from last.ckpt, overwrite=true to "
            "start again in this folder, or give another hydra.run.dir"
        )


def check_config(cfg: DictConfig, sweep_direction: Any = None) -> None:
    """All checks that need no constructor: root keys and group shapes, root types, a run
    length that trains something, the optimised metric (against the sweeper's
    ``direction``) and the output folders. A single run also checks ``check_fresh_run``
    (a sweep's jobs each get a new folder; a sweeper that reruns one decides itself).

    Raises:
        ConfigError: Naming the first bad key.
    """
    check_keys(cfg)
    check_root(cfg)
    check_run_length(cfg.trainer)
    check_optimized_metric(cfg.get("optimized_metric"), sweep_direction)
    check_output_folders(cfg)


def check_group_names(overrides: list[str]) -> None:
    """Command-line overrides that select a config group by a near-miss of its name
    (``experiment=exp1``, ``+experiment=exp1``): Hydra would suggest appending a new root key,
    which then fails as an unknown key and never names the real group.

    Raises:
        ConfigError: Naming the override and the group it most likely means.
    """
    known = set(CONFIG_GROUPS) | set(_ROOT_TYPES) | {"hydra"}
    for override in overrides:
        if override.startswith("-") or "=" not in override:
            continue
        key, value = override.split("=", 1)
        head = re.split(r"[./@]", key.lstrip("+~"), maxsplit=1)[0]
        if head in known:
            continue
        close = difflib.get_close_matches(head, CONFIG_GROUPS, n=1, cutoff=0.8)
        if close:
            meant = key.lstrip("+~").replace(head, close[0], 1)
            raise ConfigError(
                f"{override}: there is no config group {head!r}; did you mean {meant}={value}?"
            )


def exit_with_error(message: str, code: int) -> NoReturn:
    """The training entry point's error contract: one line on stderr, then exit ``code``."""
    print(f"train_model: error: {message}", file=sys.stderr)
    sys.exit(code)


class StartCheck(Callback):
    """Hydra callback: what must be refused before Hydra creates the run or sweep folder (an
    unwritable ``hydra.run.dir`` / ``hydra.sweep.dir``, where Hydra itself would print a
    traceback) or starts a sweep's first job (a sweeper ``direction`` that would make
    ``optimized_metric`` worse): one line, exit code 2."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._refuse(lambda: check_writable("hydra.run.dir", config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        direction = config.hydra.sweeper.get("direction")
        self._refuse(lambda: check_optimized_metric(config.get("optimized_metric"), direction))
        self._refuse(lambda: check_writable("hydra.sweep.dir", config.hydra.sweep.dir))

    @staticmethod
    def _refuse(check: Callable[[], None]) -> None:
        try:
            check()
        except ConfigError as err:
            exit_with_error(str(err), 2)
