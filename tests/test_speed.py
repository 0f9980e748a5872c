"""Speed switches (``genvae.callbacks.SpeedUp``: channels_last, torch.compile) and the training benchmark."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from genvae.callbacks import SpeedUp
from genvae.callbacks.speed import batch_to_channels_last, compile_networks, to_channels_last
from genvae.data import MNISTDataModule
from genvae.models import VAE

from .conftest import write_fake_mnist

REPO = Path(__file__).resolve().parents[1]


def conv_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(backbone="conv", backbone_kwargs={"channels": [8, 16]}, latent_dim=4, lr=2e-3)


def images(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def loss_and_grads(model: VAE, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(2)  # the same reparameterisation noise for both models
    loss = model.losses({"image": x})["loss"]
    model.zero_grad()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_channels_last_matches_default_layout() -> None:
    model = conv_vae()
    fast = to_channels_last(copy.deepcopy(model))
    weight = fast.backbone.encoder[2].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    batch = batch_to_channels_last({"image": images(), "label": torch.zeros(8)})
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(fast.posterior(batch["image"]), model.posterior(images()))
        z = torch.randn(8, 4)
        torch.testing.assert_close(fast.decode(z), model.decode(z))
    loss, grads = loss_and_grads(model, images())
    fast_loss, fast_grads = loss_and_grads(fast, batch["image"])
    torch.testing.assert_close(fast_loss, loss)
    for got, want in zip(fast_grads, grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_compiled_networks_give_the_same_loss_and_state_dict_keys() -> None:
    """Traced by dynamo + AOT autograd (``aot_eager``: no C++ code generation, so it stays fast)."""
    model = conv_vae()
    compiled = copy.deepcopy(model)
    assert compile_networks(compiled, backend="aot_eager") == [
        "backbone.encoder",
        "backbone.decoder",
        "encoder_head",
        "decoder_head",
    ]
    assert list(compiled.state_dict()) == list(model.state_dict())  # no "_orig_mod." prefixes
    loss, grads = loss_and_grads(model, images())
    compiled_loss, compiled_grads = loss_and_grads(compiled, images())
    torch.testing.assert_close(compiled_loss, loss)
    for got, want in zip(compiled_grads, grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(
    os.environ.get("GENVAE_SLOW_TESTS") != "1",
    reason="inductor compiles C++ kernels: ~50 s on a 2-core CPU; set GENVAE_SLOW_TESTS=1 to run",
)
def test_inductor_compiled_loss_matches() -> None:
    model = VAE(backbone="mlp", backbone_kwargs={"hidden": [32]}, latent_dim=4)
    compiled = copy.deepcopy(model)
    compile_networks(compiled)
    try:
        compiled_loss, _ = loss_and_grads(compiled, images())
    except Exception as err:  # no C++ compiler or headers: inductor fails at the first call
        pytest.skip(f"torch.compile (inductor) does not work here: {type(err).__name__}: {err}")
    loss, _ = loss_and_grads(model, images())
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-4, atol=1e-4)


def test_speedup_callback_trains_and_checkpoint_reloads_uncompiled(tiny_mnist: Path, tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    model = conv_vae()
    speed = SpeedUp(compile=True, channels_last=True, compile_backend="aot_eager")
    trainer = L.Trainer(
        max_steps=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[speed],
    )
    dm = MNISTDataModule(root=str(tiny_mnist), source="test", batch_size=16, attributes=False, download=False)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3
    assert model.backbone.encoder._compiled_call_impl is not None
    assert model.backbone.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
    path = tmp_path / "speed.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in state)
    reloaded = conv_vae()  # a plain, uncompiled model in the default layout
    reloaded.load_state_dict(state, strict=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)


def load_bench_training() -> Any:
    """benchmarks/bench_training.py as a module, registered in sys.modules (its dataclasses need that)."""
    spec = importlib.util.spec_from_file_location("bench_training", REPO / "benchmarks" / "bench_training.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_times_genvae_fit_and_the_plain_loop_in_fresh_processes(
    tiny_mnist: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bench = load_bench_training()
    out = tmp_path / "bench.json"
    data = write_fake_mnist(tmp_path / "mnist", n_train=800)  # 5 steps an epoch at batch 128
    argv = ["--data", str(data), "--workloads", "mlp_vae", "--steps", "1", "3", "--repeats", "1"]
    result = bench.main([*argv, "--device", "cpu", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "MLP VAE (512, 256), batch 128" in printed and "plain/genvae" in printed
    saved = json.loads(out.read_text())
    assert saved["kind"] == "marginal_step_time"
    workload = saved["workloads"]["mlp_vae"]
    assert workload["steps"] == [1, 3] and workload["clock_steps"] == [1, 2]
    assert workload == result["workloads"]["mlp_vae"]
    for way in ("genvae", "lightning", "plain"):
        assert [len(workload["seconds"][way][n]) for n in ("short", "long")] == [1, 1]
        assert all(t > 0 for n in ("short", "long") for t in workload["seconds"][way][n])
        (in_run,) = workload["all_ms_per_step"][way]  # the StepTimer of the LONG run (plain: its own clock)
        assert 0 < in_run == workload["ms_per_step"][way]
        (two_run,) = workload["all_two_run_ms_per_step"][way]
        assert two_run == pytest.approx(
            1000 * (workload["seconds"][way]["long"][0] - workload["seconds"][way]["short"][0]) / 2
        )
    ms = workload["ms_per_step"]
    assert workload["ratio_plain_over_genvae"] == pytest.approx(ms["plain"] / ms["genvae"])
    assert workload["ratio_plain_over_lightning"] == pytest.approx(ms["plain"] / ms["lightning"])
    assert workload["target"] == 0.90 and workload["overrides"][-1] == "--data.init_args.batch_size=128"


def test_benchmark_refuses_step_counts_that_cross_an_epoch_end(tiny_mnist: Path) -> None:
    """A run past the first epoch would time genvae's validation epoch as if it were training steps."""
    bench = load_bench_training()
    argv = ["--data", str(tiny_mnist), "--workloads", "mlp_vae", "--steps", "1", "3", "--no-json"]
    with pytest.raises(SystemExit, match="mlp_vae has 1 steps an epoch; LONG must end inside the first"):
        bench.main([*argv, "--device", "cpu"])


def test_plain_loop_trains_the_configs_model_on_the_datamodules_tensors(tiny_mnist: Path) -> None:
    """The benchmark's floor builds the very model of the YAML (class, backbone, batch size) through the CLI."""
    bench = load_bench_training()
    from genvae.cli import build_cli

    args = bench.config_args(bench.WORKLOADS["mlp_vae"], str(tiny_mnist), "cpu")
    cli = build_cli(args, run=False)
    assert type(cli.model).__name__ == "VAE" and cli.model.hparams.backbone == "mlp"
    assert cli.model.hparams.backbone_kwargs == {"hidden": [512, 256]}
    assert cli.datamodule.batch_size == 128
    bench.plain_loop(3, args)  # trains without error
