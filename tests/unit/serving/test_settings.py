"""Serving settings: the workers' copy through the environment is the CLI's, and the default
threads share the cores among the workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from vae_cats.serving.settings import (
    SETTINGS_VARIABLE,
    Settings,
    available_cores,
    default_threads,
)


def test_settings_travel_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        model=Path("/models/x.ckpt"), backend="torch", threads=1, batching=False, batch_wait_ms=5
    )
    monkeypatch.setenv(SETTINGS_VARIABLE, settings.to_environment())
    assert Settings.from_environment() == settings
    monkeypatch.delenv(SETTINGS_VARIABLE)
    with pytest.raises(RuntimeError, match="python -m vae_cats.serving"):
        Settings.from_environment()


def test_threads_per_worker_fit_the_cores() -> None:
    cores = available_cores()
    for workers in (1, 2, 3, cores, cores + 1):
        threads = default_threads(workers)
        assert threads >= 1 and (workers * threads <= cores or threads == 1)


@pytest.mark.parametrize(
    ("field", "value"), [("threads", 0), ("chunk_images", 0), ("batch_wait_ms", -1.0)]
)
def test_bad_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Settings(**{field: value})  # type: ignore[arg-type]
