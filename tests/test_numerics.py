"""Subnormal floats flushed to zero in CPU computation: the setting itself and the CLI key that sets it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genvae.utils.numerics import flush_denormals

from .conftest import fit_smoke

SUBNORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


def product_of_a_subnormal() -> float:
    return float(torch.full((4096,), SUBNORMAL).mul(1.0)[-1])


def test_flush_denormals_switches_cpu_subnormals_to_zero_and_back() -> None:
    if not flush_denormals(True):
        pytest.skip("this CPU has no flush-to-zero mode")
    assert product_of_a_subnormal() == 0.0
    assert float(torch.tensor(1e-30) * 1e-10) == 0.0  # a result that would be subnormal is flushed too
    assert float(torch.tensor(2e-38) * 1.0) == pytest.approx(2e-38)  # normal numbers are untouched
    flush_denormals(False)
    assert product_of_a_subnormal() == pytest.approx(SUBNORMAL, rel=1e-6)


@pytest.mark.parametrize("flag, flushed", [([], True), (["--flush_denormal", "false"], False)])
def test_the_cli_flushes_subnormals_unless_told_not_to(
    flag: list[str], flushed: bool, tiny_mnist: Path, tmp_path: Path
) -> None:
    if not flush_denormals(False):
        pytest.skip("this CPU has no flush-to-zero mode")
    fit_smoke(tiny_mnist, tmp_path, "--trainer.fast_dev_run", "1", *flag)
    assert (product_of_a_subnormal() == 0.0) is flushed
