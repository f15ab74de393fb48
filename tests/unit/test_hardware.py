"""trainer.precision: auto resolves by the hardware found, both answers on either machine
(the CPU's capability and the GPU are monkeypatched), and an emulated bf16 is warned about."""

from __future__ import annotations

import pytest
import torch

from vae_cats import hardware
from vae_cats.hardware import resolve_precision


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A machine without CUDA whose CPU capability the test sets."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return monkeypatch


def set_cpu(monkeypatch: pytest.MonkeyPatch, capability: str, native_bf16: bool) -> None:
    monkeypatch.setattr(hardware, "cpu_capability", lambda: capability)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native_bf16)


def test_auto_on_a_cpu_without_native_bf16_is_float32(cpu: pytest.MonkeyPatch) -> None:
    set_cpu(cpu, "AVX2", native_bf16=False)
    for accelerator in ("cpu", "auto"):
        chosen = resolve_precision("auto", accelerator)
        assert chosen.value == "32-true" and chosen.warning is None
        assert chosen.reason == "CPU capability AVX2, no native bf16"


def test_auto_on_a_cpu_with_native_bf16_is_bf16_mixed(cpu: pytest.MonkeyPatch) -> None:
    set_cpu(cpu, "AVX512", native_bf16=True)
    chosen = resolve_precision("auto", "cpu")
    assert chosen == ("bf16-mixed", "CPU capability AVX512, native bf16", None)


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_on_a_gpu_follows_its_bf16_support(
    monkeypatch: pytest.MonkeyPatch, bf16: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _=0: "Test GPU")
    for accelerator in ("gpu", "cuda", "auto"):
        chosen = resolve_precision("auto", accelerator)
        assert chosen.value == expected and chosen.reason.startswith("GPU Test GPU")


def test_explicit_bf16_on_an_emulating_cpu_runs_with_a_one_line_warning(
    cpu: pytest.MonkeyPatch,
) -> None:
    set_cpu(cpu, "AVX2", native_bf16=False)
    chosen = resolve_precision("bf16-mixed", "cpu")
    assert chosen.value == "bf16-mixed" and chosen.reason == "set explicitly"
    assert chosen.warning is not None and "\n" not in chosen.warning
    assert "emulates" in chosen.warning and "AVX2" in chosen.warning
    assert "precision=auto" in chosen.warning


def test_explicit_values_are_kept_without_warning_where_they_are_fast(
    cpu: pytest.MonkeyPatch,
) -> None:
    set_cpu(cpu, "AVX512", native_bf16=True)
    assert resolve_precision("bf16-mixed", "cpu").warning is None
    set_cpu(cpu, "AVX2", native_bf16=False)
    assert resolve_precision("32-true", "cpu") == ("32-true", "set explicitly", None)
    assert resolve_precision(32, "cpu").value == "32", "Lightning's int values pass through"


def test_this_machine_is_described_by_its_real_capability() -> None:
    described = hardware.describe_hardware()
    assert described.startswith(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, ")
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert ("no native bf16" in described) is not native
