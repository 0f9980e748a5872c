"""Backbone registry: names, class paths, shapes and errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from genvae.backbones import BACKBONES, ConvBackbone, build_backbone
from genvae.errors import ConfigError
from genvae.models import AE, VAE


@pytest.mark.parametrize("name", ["mlp", "conv", "resnet"])
@pytest.mark.parametrize("image_shape", [(1, 28, 28), (3, 32, 32)])
def test_backbones_round_trip_shapes(name: str, image_shape: tuple[int, int, int]) -> None:
    backbone = build_backbone(name, image_shape)
    x = torch.rand(2, *image_shape)
    features = backbone.encoder(x)
    assert features.shape == (2, *backbone.feature_shape)
    assert backbone.decoder(features).shape == x.shape


def test_registry_names_and_class_path() -> None:
    assert {"mlp", "conv", "resnet"} <= set(BACKBONES)
    by_path = build_backbone("genvae.backbones.conv.ConvBackbone", (1, 28, 28), {"channels": [8, 16]})
    assert isinstance(by_path, ConvBackbone) and by_path.feature_shape == (16, 7, 7)


def test_user_backbone_by_class_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_nets.py").write_text(
        textwrap.dedent("""
        from torch import nn
        from genvae.backbones import Backbone

        class Tiny(Backbone):
            def __init__(self, image_shape, width: int = 8):
                super().__init__(image_shape)
                self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.Unflatten(1, (width, 1, 1)))
                self.decoder = nn.Sequential(nn.Flatten(), nn.Linear(width, 784), nn.Unflatten(1, (1, 28, 28)))
                self.feature_shape = (width, 1, 1)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = VAE(latent_dim=2, backbone="my_nets.Tiny", backbone_kwargs={"width": 5})
    assert model.backbone.feature_shape == (5, 1, 1)
    assert model.decode(torch.zeros(3, 2)).shape == (3, 1, 28, 28)
    sys.modules.pop("my_nets", None)


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("transformer", {}, "unknown name 'transformer'"),
        ("nosuchpkg.Net", {}, "cannot import 'nosuchpkg.Net'"),
        ("torch.nn.Linear", {}, "not a subclass"),
        ("conv", {"chanels": [8]}, "backbone_kwargs for backbone 'conv'.*chanels"),
        ("conv", {"channels": [8, 8, 8]}, "not divisible by 2\\*\\*3"),
        ("mlp", {"activation": "swishy"}, "activation: unknown 'swishy'"),
    ],
)
def test_bad_backbone_specs_are_one_line_config_errors(spec: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        AE(backbone=spec, backbone_kwargs=kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("family", ["AE", "VAE", "ARVAE"])
def test_model_built_in_python_reloads_through_its_class(family: str, tmp_path: Path) -> None:
    import lightning as L

    from genvae import models

    cls = getattr(models, family)
    model = cls(latent_dim=8, backbone="mlp", backbone_kwargs={"hidden": [8]})
    assert "encoder_outputs" not in model.hparams  # fixed by the family, not a setting
    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    reloaded = cls.load_from_checkpoint(tmp_path / "model.ckpt", map_location="cpu")
    assert reloaded.latent_dim == 8
    for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
