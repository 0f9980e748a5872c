"""The CPU dropout of the VQ-VAE prior: F.dropout's distribution and scaling, four elements per draw."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genvae.models.dropout import Dropout, causal_attention, dropout, keep_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_dropout_drops_share_p_and_keeps_the_mean(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, p)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / len(x)) ** 0.5  # a binomial share, within 5 sigma
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - round(p * 2**16) / 2**16)))
    assert abs(y.mean().item() - 1.0) < 0.01  # unbiased: E[dropout(x)] = x


def test_mask_words_are_independent_across_the_four_elements_of_a_draw() -> None:
    torch.manual_seed(0)
    mask = keep_mask((100_000, 4), round(0.5 * 2**16), torch.device("cpu")).float()
    correlation = torch.corrcoef(mask.T)
    assert (correlation - torch.eye(4)).abs().max() < 0.02


def test_gradient_is_the_mask_times_the_scale() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 49, 128, requires_grad=True)
    y = dropout(x, 0.2)
    y.backward(torch.ones_like(y))
    scale = 1 / (1 - round(0.2 * 2**16) / 2**16)
    expected = torch.where(y != 0, scale, 0.0)
    assert torch.equal(x.grad, expected)


def test_identity_in_eval_mode_or_at_p_zero_and_zero_at_p_one() -> None:
    x = torch.randn(10, 10)
    assert torch.equal(dropout(x, 0.5, training=False), x)
    assert torch.equal(dropout(x, 0.0), x)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_seeded_draws_repeat() -> None:
    x = torch.randn(1000)
    torch.manual_seed(3)
    first = dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.3), first)


def test_use_fast_dropout_replaces_every_dropout_module_and_keeps_the_state_dict() -> None:
    layer = nn.TransformerEncoderLayer(16, 2, 32, 0.1, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    keys = list(encoder.state_dict())
    use_fast_dropout(encoder)
    assert not any(type(m) is nn.Dropout for m in encoder.modules())
    assert sum(isinstance(m, Dropout) for m in encoder.modules()) == 6  # 3 per layer
    assert list(encoder.state_dict()) == keys
    encoder.eval()
    x = torch.randn(2, 5, 16)
    assert torch.equal(encoder(x), encoder(x))  # eval: no dropout


def test_causal_attention_is_sdpa_and_masks_the_weights_with_the_fast_dropout() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 7, 8).unbind(0)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.equal(causal_attention(q, k, v, 0.1, training=False), sdpa)
    assert torch.equal(causal_attention(q, k, v, 0.0), sdpa)
    # dropping on a CPU: the causal softmax weights, masked and scaled as dropout() does, times v
    weights = (q @ k.transpose(-1, -2) / 8**0.5).masked_fill(torch.ones(7, 7).triu(1).bool(), float("-inf"))
    torch.manual_seed(5)
    expected = dropout(weights.softmax(-1), 0.3) @ v
    torch.manual_seed(5)
    torch.testing.assert_close(causal_attention(q, k, v, 0.3), expected)
    torch.manual_seed(5)
    changed = v.clone()
    changed[:, :, 4:] += 1  # later positions: the first four outputs cannot see them
    torch.testing.assert_close(causal_attention(q, k, changed, 0.3)[:, :, :4], expected[:, :, :4])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uses_torch_dropout() -> None:
    x = torch.ones(1000, device="cuda")
    torch.manual_seed(0)
    ours = dropout(x, 0.3)
    torch.manual_seed(0)
    assert torch.equal(ours, F.dropout(x, 0.3, True))
