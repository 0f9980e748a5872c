"""``genvae predict`` writes predictions.npz: per-image index, label, posterior or codes, attributes, error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genvae.data.attributes import ATTRIBUTE_NAMES, morpho_attributes
from genvae.models import VAE, VQVAE

from .conftest import REPO, fake_digits
from .test_cli import checkpoint_of, run_cli


def predict(stem: str, ckpt: Path, data: Path, root: Path) -> dict[str, np.ndarray]:
    run_cli(
        [
            "predict",
            "--config",
            str(REPO / "experiments" / f"{stem}.yaml"),
            "--data.init_args.root",
            str(data),
            "--data.init_args.eval_batch_size",
            "32",  # several batches, joined in index order
            "--trainer.accelerator",
            "cpu",
            "--trainer.logger",
            "false",
            "--ckpt_path",
            str(ckpt),
        ],
        root,
    )
    with np.load(root / "predictions.npz") as archive:
        return dict(archive)


def test_vae_predictions_hold_the_posterior_attributes_and_error(tiny_mnist: Path, tmp_path: Path) -> None:
    ckpt = checkpoint_of("smoke", tiny_mnist, tmp_path)
    rows = predict("smoke", ckpt, tiny_mnist, tmp_path / "predict")
    assert set(rows) == {
        "index", "label", "mu", "logvar", "attributes", "reconstruction_attributes", "recon_mse",
        "attribute_names",
    }  # fmt: skip
    assert rows["index"].tolist() == list(range(100))  # the 100 test images, in order
    assert rows["mu"].shape == rows["logvar"].shape == (100, 4)
    assert rows["attributes"].shape == (100, 6) and rows["attribute_names"].tolist() == list(ATTRIBUTE_NAMES)

    model = VAE.load_from_checkpoint(ckpt, map_location="cpu").eval()
    images = fake_digits(100, 2)[0].unsqueeze(1).float() / 255  # the t10k file of tiny_mnist
    with torch.no_grad():
        mu, logvar = model.posterior(images)
        mse = (model.decode(mu) - images).pow(2).flatten(1).mean(1)
    assert np.allclose(rows["mu"], mu.numpy(), atol=1e-5) and np.allclose(
        rows["logvar"], logvar.numpy(), atol=1e-5
    )
    assert np.allclose(rows["recon_mse"], mse.numpy(), atol=1e-6)
    assert rows["label"].tolist() == fake_digits(100, 2)[1].tolist()
    assert np.allclose(
        rows["attributes"][:10], morpho_attributes(images[:10]).numpy(), atol=1e-4, equal_nan=True
    )


def test_vqvae_predictions_hold_code_indices(tiny_mnist: Path, tmp_path: Path) -> None:
    ckpt = checkpoint_of("vqvae", tiny_mnist, tmp_path)
    rows = predict("vqvae", ckpt, tiny_mnist, tmp_path / "predict")
    assert "mu" not in rows and rows["codes"].shape == (100, 7, 7) and rows["codes"].dtype == np.int64
    model = VQVAE.load_from_checkpoint(ckpt, map_location="cpu").eval()
    images = fake_digits(100, 2)[0][:8].unsqueeze(1).float() / 255
    with torch.no_grad():
        assert np.array_equal(rows["codes"][:8], model.encode_indices(images).numpy())
    assert (rows["codes"] < model.num_codes).all()
