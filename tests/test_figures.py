"""Figure callbacks: each figure is rendered to PNG and checked as a person would (size, not blank)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from genvae.callbacks import Interpolation, LatentScatter, Reconstructions, Samples
from genvae.callbacks.figures import PADDING, image_grid, interpolate, project_2d
from genvae.cli import main
from genvae.data import MNISTDataModule
from genvae.errors import ConfigError
from genvae.models import AE, VAE

from .conftest import REPO

SCALE = 2


def grid_size(rows: int, columns: int, scale: int = SCALE, tile: int = 28) -> tuple[int, int]:
    """(height, width) of an image grid: tiles plus PADDING around and between them, times scale."""
    return (
        scale * (rows * (tile + PADDING) + PADDING),
        scale * (columns * (tile + PADDING) + PADDING),
    )


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_not_blank(image: np.ndarray) -> None:
    assert image.std() > 20, "figure is (nearly) one colour"
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 8


def test_image_grid_puts_rows_in_order_with_white_padding() -> None:
    rows = torch.zeros(2, 3, 1, 28, 28)
    rows[1, 2] = 0.5  # second row, third column
    grid = image_grid(rows, scale=1)
    assert grid.shape == (3, *grid_size(2, 3, scale=1))
    top = left = PADDING
    assert grid[:, top : top + 28, left : left + 28].eq(0).all()
    top, left = 2 * PADDING + 28, 3 * PADDING + 2 * 28
    assert torch.allclose(grid[:, top : top + 28, left : left + 28], torch.tensor(0.5))
    assert grid[:, :PADDING].eq(1).all()  # white border
    assert image_grid(rows, scale=3).shape == (3, *grid_size(2, 3, scale=3))


def test_interpolate_runs_from_z0_to_z1_linearly() -> None:
    z0, z1 = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -2.0]])
    path = interpolate(z0, z1, 5)
    assert path.shape == (5, 1, 2)
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    assert torch.allclose(path[2], (z0 + z1) / 2)  # t = 0.5
    assert torch.allclose(path[1], 0.75 * z0 + 0.25 * z1)


def test_project_2d_keeps_the_geometry_of_a_plane_and_flattens_maps() -> None:
    g = torch.Generator().manual_seed(0)
    plane = torch.randn(200, 2, generator=g) * torch.tensor([3.0, 1.0])
    basis, _ = torch.linalg.qr(torch.randn(6, 2, generator=g))
    latents = (plane @ basis.T + 5.0).view(200, 1, 2, 3)  # a 2-D plane inside a [1, 2, 3] latent map
    coords, explained = project_2d(latents)
    assert coords.shape == (200, 2)
    torch.testing.assert_close(torch.cdist(coords, coords), torch.cdist(plane, plane), atol=5e-3, rtol=1e-4)
    assert float(explained.sum()) == pytest.approx(1.0, abs=1e-5) and explained[0] > explained[1]
    one_dim, explained = project_2d(torch.arange(5.0).view(5, 1))
    assert one_dim[:, 1].eq(0).all() and float(explained[0]) == pytest.approx(1.0)


def trained_vae(data_root: Path, tmp_path: Path, callbacks: list[L.Callback]) -> L.Trainer:
    torch.manual_seed(0)
    model = VAE(backbone="mlp", backbone_kwargs={"hidden": [64]}, latent_dim=4, lr=3e-3)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=6,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    data = MNISTDataModule(root=str(data_root), batch_size=32, eval_batch_size=64, attributes=False)
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    return trainer


def test_every_figure_renders_to_a_png_of_the_right_size(tiny_mnist: Path, tmp_path: Path) -> None:
    callbacks = [
        Reconstructions(num_images=8, columns=4, scale=SCALE),
        Samples(num_images=12, columns=6, scale=SCALE),
        Interpolation(classes=(0, 7), rows=1, steps=6, scale=SCALE),
        LatentScatter(max_points=500),
    ]
    trained_vae(tiny_mnist, tmp_path, callbacks)
    # tiny_mnist's labels are random, so a 0 and a 7 are among the 20 validation images
    expected = {
        "reconstructions": grid_size(4, 4),  # input row, output row, input row, output row
        "samples": grid_size(2, 6),
        "interpolation": grid_size(1, 6 + 2),  # steps plus the two inputs
        "latent_scatter": (500, 600),  # 6 x 5 inches at 100 dpi
    }
    for stage in ("val", "test"):
        for name, size in expected.items():
            (png,) = (tmp_path / "figures" / stage / name).glob("*.png")
            image = read_png(png)
            assert image.shape == (*size, 3), (stage, name)
            assert_not_blank(image)
    # the reconstruction grid starts with the first validation image, unchanged
    recon = read_png(next((tmp_path / "figures" / "val" / "reconstructions").glob("*.png")))
    data = MNISTDataModule(root=str(tiny_mnist), attributes=False)
    data.setup()
    first = data.splits["val"]["image"][0, 0].float() / 255
    tile = recon[
        SCALE * PADDING : SCALE * (PADDING + 28) : SCALE, SCALE * PADDING : SCALE * (PADDING + 28) : SCALE, 0
    ]
    assert np.abs(tile / 255.0 - first.numpy()).max() <= 1 / 255 + 1e-6
    # a scatter plot in colour: the tab10 colours of several labels are present
    scatter = read_png(next((tmp_path / "figures" / "test" / "latent_scatter").glob("*.png")))
    saturated = (scatter.max(-1).astype(int) - scatter.min(-1)) > 60
    assert saturated.sum() > 500


def test_samples_figure_is_reproducible_and_leaves_training_noise_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    model = VAE(backbone="mlp", backbone_kwargs={"hidden": [16]}, latent_dim=2)
    logged: list[torch.Tensor] = []
    monkeypatch.setattr(
        "genvae.callbacks.figures.log_image", lambda trainer, key, image: logged.append(image)
    )
    callback = Samples(num_images=4, columns=2, seed=3)
    for _ in range(2):
        state = torch.get_rng_state()
        callback.log_figure(SimpleNamespace(global_rank=0), model, "val")  # type: ignore[arg-type]
        assert torch.equal(torch.get_rng_state(), state)  # the training generator is untouched
    torch.manual_seed(3)
    expected = image_grid(model.sample(4).view(2, 2, 1, 28, 28), scale=2)
    assert torch.equal(logged[0], logged[1]) and torch.equal(logged[0], expected)


def test_samples_callback_on_a_model_without_sample_is_a_config_error(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[Samples()], default_root_dir=tmp_path)
    data = MNISTDataModule(root=str(tiny_mnist), attributes=False)
    with pytest.raises(ConfigError, match="AE has no sample"):
        trainer.validate(AE(backbone="mlp", latent_dim=2), datamodule=data, verbose=False)


def test_figure_callbacks_are_configurable_from_yaml(tiny_mnist: Path, tmp_path: Path) -> None:
    main(
        [
            "fit",
            "--config",
            str(REPO / "experiments" / "smoke.yaml"),
            "--data.init_args.root",
            str(tiny_mnist),
            "--trainer.limit_train_batches",
            "2",
            "--trainer.logger",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.callbacks+=genvae.callbacks.Reconstructions",
            "--trainer.callbacks.num_images",
            "4",
            "--trainer.callbacks.columns",
            "4",
            "--trainer.callbacks.every_n_epochs",
            "1",
        ]
    )
    (png,) = (tmp_path / "figures" / "val" / "reconstructions").glob("*.png")
    assert read_png(png).shape == (*grid_size(2, 4), 3)
