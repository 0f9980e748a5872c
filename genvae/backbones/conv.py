"""Strided convolutional backbone: the usual MNIST VAE (28 -> 14 -> 7 and back)."""

from __future__ import annotations

from torch import nn

from genvae.backbones.base import Backbone, check_divisible, make_activation, register_backbone


@register_backbone("conv")
class ConvBackbone(Backbone):
    """One 4x4 stride-2 convolution per entry of ``channels``; the decoder mirrors it with transposed convs."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: tuple[int, ...] | list[int] = (32, 64),
        activation: str = "relu",
        batch_norm: bool = False,
    ) -> None:
        super().__init__(image_shape)
        channels = list(channels)
        in_ch = self.image_shape[0]
        height, width = check_divisible(self.image_shape, len(channels), "conv")

        def block(layer: nn.Module, ch: int) -> list[nn.Module]:
            return [layer, *([nn.BatchNorm2d(ch)] if batch_norm else []), make_activation(activation)]

        enc: list[nn.Module] = []
        for c_in, c_out in zip([in_ch, *channels[:-1]], channels, strict=True):
            enc += block(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), c_out)
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = []
        rev = channels[::-1]
        for c_in, c_out in zip(rev[:-1], rev[1:], strict=True):
            dec += block(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), c_out)
        dec.append(nn.ConvTranspose2d(rev[-1], in_ch, 4, stride=2, padding=1))
        self.decoder = nn.Sequential(*dec)
        self.feature_shape = (channels[-1], height, width)
