"""Fully connected backbone."""

from __future__ import annotations

import math

from torch import nn

from genvae.backbones.base import Backbone, make_activation, register_backbone


@register_backbone("mlp")
class MLPBackbone(Backbone):
    """Flatten -> hidden layers; the feature map is ``[hidden[-1], 1, 1]``."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        hidden: tuple[int, ...] | list[int] = (512, 256),
        activation: str = "relu",
    ) -> None:
        super().__init__(image_shape)
        hidden = list(hidden)
        n_pixels = math.prod(self.image_shape)
        widths = [n_pixels, *hidden]
        enc: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            enc += [nn.Linear(w_in, w_out), make_activation(activation)]
        enc.append(nn.Unflatten(1, (hidden[-1], 1, 1)))
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = [nn.Flatten()]
        rev = widths[::-1]
        for i, (w_in, w_out) in enumerate(zip(rev[:-1], rev[1:], strict=True)):
            dec.append(nn.Linear(w_in, w_out))
            if i < len(rev) - 2:
                dec.append(make_activation(activation))
        dec.append(nn.Unflatten(1, self.image_shape))
        self.decoder = nn.Sequential(*dec)
        self.feature_shape = (hidden[-1], 1, 1)
