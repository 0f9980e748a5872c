"""Residual convolutional backbone (VQ-VAE style residual stacks around strided convs)."""

from __future__ import annotations

import torch
from torch import nn

from genvae.backbones.base import Backbone, check_divisible, make_activation, register_backbone


class ResidualBlock(nn.Module):
    """``x + conv1x1(act(conv3x3(act(x))))``."""

    def __init__(self, channels: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            make_activation(activation),
            nn.Conv2d(channels, hidden, 3, padding=1),
            make_activation(activation),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register_backbone("resnet")
class ResNetBackbone(Backbone):
    """Stem conv, then per entry of ``channels`` a 4x4 stride-2 conv followed by ``blocks`` residual blocks."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: tuple[int, ...] | list[int] = (32, 64),
        blocks: int = 2,
        activation: str = "relu",
    ) -> None:
        super().__init__(image_shape)
        channels = list(channels)
        in_ch = self.image_shape[0]
        height, width = check_divisible(self.image_shape, len(channels), "resnet")

        def stack(ch: int) -> list[nn.Module]:
            return [ResidualBlock(ch, max(ch // 2, 8), activation) for _ in range(blocks)]

        enc: list[nn.Module] = [nn.Conv2d(in_ch, channels[0], 3, padding=1)]
        for c_in, c_out in zip([channels[0], *channels[:-1]], channels, strict=True):
            enc += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), *stack(c_out)]
        enc.append(make_activation(activation))
        self.encoder = nn.Sequential(*enc)

        rev = channels[::-1]
        dec: list[nn.Module] = []
        for c_in, c_out in zip(rev, [*rev[1:], rev[-1]], strict=True):
            dec += [*stack(c_in), make_activation(activation), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)]
        dec += [make_activation(activation), nn.Conv2d(rev[-1], in_ch, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.feature_shape = (channels[-1], height, width)
