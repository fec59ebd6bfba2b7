"""LoRA (tinyft/lora.py): the forward is the paper's formula, with the alpha / r scale; it starts as the base
model, merging changes nothing, and only the adapters train."""

import numpy as np
import pytest

from tinyft import Tensor
from tinyft.autograd import manual_seed
from tinyft.lora import LoRALinear, check_lora_args, inject_lora, lora_layers, merged_state_dict
from tinyft.nn import GPT, GPTConfig, Linear


def tiny_gpt(vocab=20, n_layer=2, seed=0):
    manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=n_layer, n_head=2, n_embd=16))


def explicit_lora_forward(x, W, b, A, B, alpha, r):
    """y = x W^T + b + (alpha / r) x A^T B^T, written out in NumPy from the paper (Hu et al. 2021, eq. 3)."""
    return x @ W.T + b + (alpha / r) * (x @ A.T @ B.T)


def lora_layer_float64(rank, alpha, n_in=6, n_out=5, seed=0):
    """A float64 LoRALinear around a Linear with a nonzero bias, and a nonzero B (else the adapter is invisible)."""
    manual_seed(seed)
    base = Linear(n_in, n_out).to(np.float64)
    rng = np.random.default_rng(seed)
    base.bias.data[...] = rng.normal(size=n_out)
    layer = LoRALinear(base, rank, alpha)
    layer.lora_B.data[...] = rng.normal(size=(n_out, rank))
    return layer


@pytest.mark.parametrize("rank, alpha", [(4, 8), (2, 3.0), (3, 1.0)])
def test_lora_forward_equals_the_explicit_formula_with_alpha_over_r(rank, alpha):
    layer = lora_layer_float64(rank, alpha)
    x = np.random.default_rng(1).normal(size=(2, 3, 6))  # (B, T, in): the formula holds on every leading axis
    W, b, A, B = (p.data.copy() for p in (layer.weight, layer.bias, layer.lora_A, layer.lora_B))
    got = layer(Tensor(x)).data  # (2, 3, 5)
    np.testing.assert_allclose(got, explicit_lora_forward(x, W, b, A, B, alpha, rank), rtol=1e-12, atol=1e-12)
    # The check has teeth: scaling by alpha instead of alpha / r (the bug it guards against) is far off.
    wrong = x @ W.T + b + alpha * (x @ A.T @ B.T)
    assert np.abs(got - wrong).max() > 1e-3


def test_delta_weight_is_alpha_over_r_times_b_a_and_merging_adds_it_to_w():
    layer = lora_layer_float64(rank=2, alpha=3.0)
    A, B, W = layer.lora_A.data.copy(), layer.lora_B.data.copy(), layer.weight.data.copy()
    np.testing.assert_allclose(layer.delta_weight(), 1.5 * B @ A, rtol=1e-12)
    layer.merge()
    np.testing.assert_allclose(layer.weight.data, W + 1.5 * B @ A, rtol=1e-12)


def test_lora_at_initialization_equals_the_base_model():
    model = tiny_gpt()
    x = np.random.default_rng(1).integers(0, 20, size=(2, 8))
    base = model(x)[0].data.copy()
    layers = inject_lora(model, rank=4, alpha=8, targets=("c_attn", "c_proj", "c_fc"))
    assert len(layers) == 2 * 4 and all(np.all(layer.lora_B.data == 0) for layer in layers)
    assert [name for name, _ in lora_layers(model)][:2] == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"]
    np.testing.assert_array_equal(model(x)[0].data, base)


def test_lora_a_starts_with_variance_one_over_in_features():
    manual_seed(0)
    layer = LoRALinear(Linear(400, 8), rank=64, alpha=64)
    assert layer.lora_A.data.var() == pytest.approx(1 / 400, rel=0.05)  # N(0, 1/in): 25,600 draws


def test_lora_merged_equals_unmerged():
    model = tiny_gpt()
    layers = inject_lora(model, rank=4, alpha=8, targets=("c_attn", "mlp.c_fc"))
    rng = np.random.default_rng(2)
    for layer in layers:
        layer.lora_B.data[...] = rng.normal(0, 0.1, layer.lora_B.shape)
    x = rng.integers(0, 20, size=(2, 8))
    unmerged = model(x)[0].data.copy()
    weights = [layer.weight.data.copy() for layer in layers]
    for layer in layers:
        layer.merge()
    np.testing.assert_allclose(model(x)[0].data, unmerged, rtol=1e-4, atol=1e-5)
    for layer, w in zip(layers, weights):
        layer.unmerge()
        np.testing.assert_allclose(layer.weight.data, w, atol=1e-6)
    plain = tiny_gpt(seed=9)
    plain.load_state_dict(merged_state_dict(model))  # merged export is a plain GPT
    np.testing.assert_allclose(plain(x)[0].data, unmerged, rtol=1e-4, atol=1e-5)


def test_bad_lora_arguments_name_the_argument():
    with pytest.raises(ValueError, match="lora_rank"):
        check_lora_args(0, 8, ("c_attn",))
    with pytest.raises(ValueError, match="lora_alpha"):
        check_lora_args(2, -1, ("c_attn",))
    with pytest.raises(ValueError, match="lora_targets.*c_attn"):
        inject_lora(tiny_gpt(), rank=2, targets=("q_proj",))
    with pytest.raises(ValueError, match="wraps a Linear"):
        LoRALinear(tiny_gpt(), 2, 4)
