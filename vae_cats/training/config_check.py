"""Refusing a bad training config before anything trains, with one line naming the key.

One place per concern: the constructors (``ConvVAE``, ``VAELitModule``, torch optimisers,
``Trainer``) are the schema. Their type hints give the types, checked here against the
config before instantiation; their own ``ValueError``s give the allowed values, raised when
``preflight`` builds the model, optimiser and scheduler once before training; this module
only turns either into ``ConfigError("<full.key>: <what is wrong>")``.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig

_SIMPLE = (bool, int, float, str, type(None), list, tuple, dict)
_ROOT_TYPES: dict[str, Any] = {"seed": int, "resume": bool, "test": bool, "ckpt_path": str | None}


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
    if hint in (list, tuple) or hint in (typing.Sequence, typing.Iterable):
        return isinstance(value, list | tuple | ListConfig)
    if hint is dict:
        return isinstance(value, dict | DictConfig)
    if isinstance(hint, type) and hint in _SIMPLE:
        return isinstance(value, hint)
    return None


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def check_types(node: DictConfig, key: str) -> None:
    """Check every argument of every ``_target_`` node under ``node`` against the type hints
    of the target's signature; unknown argument names are refused too.

    Raises:
        ConfigError: Naming the full key, the expected type and the value found.
    """
    if "_target_" in node:
        try:
            target = get_method(node._target_)
        except ImportError:
            raise ConfigError(f"{key}._target_: cannot import {node._target_}") from None
        call: Callable[..., Any] = target.__init__ if inspect.isclass(target) else target
        signature = inspect.signature(call)
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        try:
            hints = typing.get_type_hints(call)
        except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks only
            hints = {}
        for name in map(str, node):
            if name.startswith("_"):
                continue
            full = f"{key}.{name}"
            if name not in signature.parameters and not takes_any:
                raise ConfigError(
                    f"{full}: unknown key for {node._target_} "
                    f"(it takes: {', '.join(p for p in signature.parameters if p != 'self')})"
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
    """Types of the root keys (``seed``, ``resume``, ``test``, ``ckpt_path``)."""
    for name, hint in _ROOT_TYPES.items():
        if name in cfg and _matches(cfg[name], hint) is False:
            raise ConfigError(f"{name}: expected {_type_name(hint)}, got {cfg[name]!r}")


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
