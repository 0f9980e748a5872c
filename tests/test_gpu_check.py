"""benchmarks/gpu_check.py: its GPU code path run on CPU with --quick, and its no-GPU path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from .conftest import REPO, write_fake_mnist


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_runs_its_gpu_path_on_cpu_in_quick_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    gpu_check = load_gpu_check()
    out = tmp_path / "gpu_check.json"
    data = write_fake_mnist(tmp_path / "mnist", n_train=800)  # the MLP benchmark's 3 steps in one epoch
    args = ["--data", str(data), "--device", "cpu", "--quick", "--families", "VAE", "--json", str(out)]
    assert gpu_check.main([*args, "--precisions", "bf16-mixed"]) == 0
    table = capsys.readouterr().out
    checks = ("attributes of 512 digits", "max |cpu - cpu|, 512 digits", "epoch VAE bf16-mixed")
    for check in (*checks, "causal Morpho-MNIST of 512 digits", "|cpu - cpu| grey levels, 512 digits"):
        assert check in table
    assert "bench_training plain/genvae, MLP VAE (512, 256), batch 128" in table and "failed" not in table
    results = json.loads(out.read_text())
    assert results["attributes"]["max_abs_diff"] == 0.0 and results["attributes"]["same_nan"]
    assert results["causal_dataset"]["mean_abs_diff"] == 0.0  # the same code on the same device
    assert results["epochs"]["VAE bf16-mixed"]["images"] == 64  # one batch of experiments/vae.yaml
    assert results["bench_training"]["mlp_vae"]["target"] == 0.90


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_check_without_a_gpu_says_so_and_exits_0(capsys: pytest.CaptureFixture) -> None:
    assert load_gpu_check().main([]) == 0
    assert "no CUDA GPU on this machine" in capsys.readouterr().out
