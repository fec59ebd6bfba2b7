"""Tests for tinyft/nn.py: Module mechanics, nanoGPT names and shapes, init, gradients, training, sampling."""

import math

import numpy as np
import pytest

import tinyft
from tinyft import functional as F
from tinyft.autograd import Tensor
from tinyft.gradcheck import gradcheck
from tinyft.nn import (GPT, MLP, Block, CausalSelfAttention, Dropout, Embedding, GPTConfig, LayerNorm, Linear,
                       Module, ModuleList, Parameter)

TINY = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)


def tiny_gpt(seed=0, **overrides):
    tinyft.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides}))


def nanogpt_names(n_layer, bias=True):
    """The state_dict keys of nanoGPT's GPT, in its order, written out by hand."""
    wb = ("weight", "bias") if bias else ("weight",)
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(n_layer):
        h = f"transformer.h.{i}"
        names += [f"{h}.ln_1.{s}" for s in wb]
        names += [f"{h}.attn.c_attn.{s}" for s in wb]
        names += [f"{h}.attn.c_proj.{s}" for s in wb]
        names += [f"{h}.ln_2.{s}" for s in wb]
        names += [f"{h}.mlp.c_fc.{s}" for s in wb]
        names += [f"{h}.mlp.c_proj.{s}" for s in wb]
    names += [f"transformer.ln_f.{s}" for s in wb]
    names += ["lm_head.weight"]
    return names


def nanogpt_shape(name, cfg):
    """The torch shape of a nanoGPT parameter: Linear weights (out, in), vectors (n,)."""
    V, T, C = cfg.vocab_size, cfg.block_size, cfg.n_embd
    if name in ("transformer.wte.weight", "lm_head.weight"):
        return (V, C)
    if name == "transformer.wpe.weight":
        return (T, C)
    layer, kind = name.split(".")[-3], name.split(".")[-2]
    if kind in ("ln_1", "ln_2", "ln_f"):
        return (C,)
    out, inp = {"c_attn": (3 * C, C), "c_fc": (4 * C, C),
                "c_proj": (C, 4 * C) if layer == "mlp" else (C, C)}[kind]
    return (out, inp) if name.endswith("weight") else (out,)


def hand_parameter_count(cfg):
    """nanoGPT's get_num_params(non_embedding=False): every parameter once, the tied (V, C) matrix once."""
    V, T, L, C = cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd
    per_layer = 12 * C * C + (13 * C if cfg.bias else 2 * C)  # attn 4C^2 + mlp 8C^2; biases and LN vectors
    return V * C + T * C + L * per_layer + (2 * C if cfg.bias else C)


# --- names, shapes, tying, counting --------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{}, dict(n_layer=3, n_head=4, n_embd=16, vocab_size=7, bias=False)])
def test_state_dict_names_and_shapes_match_nanogpt(overrides):
    model = tiny_gpt(**overrides)
    cfg = model.config
    sd = model.state_dict()
    assert list(sd) == nanogpt_names(cfg.n_layer, cfg.bias)
    for name, array in sd.items():
        assert array.shape == nanogpt_shape(name, cfg), name
        assert array.dtype == np.float32


def test_lm_head_weight_is_wte_weight_and_parameters_yield_it_once():
    model = tiny_gpt()
    assert model.lm_head.weight is model.transformer.wte.weight
    params = list(model.parameters())
    assert sum(p is model.transformer.wte.weight for p in params) == 1
    assert len({id(p) for p in params}) == len(params)
    names = [n for n, _ in model.named_parameters()]
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names
    sd = model.state_dict()
    assert sd["lm_head.weight"] is sd["transformer.wte.weight"]  # one copy, listed under both names
    assert sd["lm_head.weight"] is not model.lm_head.weight.data  # and a copy, not the live array


@pytest.mark.parametrize("overrides", [{}, dict(bias=False), dict(vocab_size=256, block_size=128, n_layer=4,
                                                                     n_head=4, n_embd=128)])
def test_num_parameters_equals_hand_formula_counting_tied_weight_once(overrides):
    model = tiny_gpt(**overrides)
    assert model.num_parameters() == hand_parameter_count(model.config)
    assert model.num_parameters() == sum(p.size for p in model.parameters())
    model.transformer.wpe.requires_grad_(False)
    cfg = model.config
    assert model.num_parameters(trainable_only=True) == hand_parameter_count(cfg) - cfg.block_size * cfg.n_embd


def test_worked_example_parameter_count_in_docs_is_842496():
    sizes = dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128)
    model = GPT(GPTConfig(**sizes))
    assert model.num_parameters() == 842_496
    assert len(model.state_dict()) == 53 and len(list(model.parameters())) == 52
    assert GPT(GPTConfig(**sizes, bias=False)).num_parameters() == 836_736


# --- load_state_dict -------------------------------------------------------------------------------------


def test_load_state_dict_round_trip_is_exact_and_keeps_weights_tied():
    source, target = tiny_gpt(seed=1), tiny_gpt(seed=2)
    result = target.load_state_dict(source.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert target.lm_head.weight is target.transformer.wte.weight
    idx = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(source(idx)[0].data, target(idx)[0].data)


@pytest.mark.parametrize("keep", ["transformer.wte.weight", "lm_head.weight"])
def test_load_state_dict_accepts_either_tied_name_alone(keep):
    source, target = tiny_gpt(seed=1), tiny_gpt(seed=2)
    sd = source.state_dict()
    drop = ({"transformer.wte.weight", "lm_head.weight"} - {keep}).pop()
    del sd[drop]
    target.load_state_dict(sd)  # strict, yet nothing is missing: the tied Parameter got its values
    np.testing.assert_array_equal(target.lm_head.weight.data, source.transformer.wte.weight.data)
    assert target.lm_head.weight is target.transformer.wte.weight


def test_load_state_dict_rejects_tied_names_with_different_values():
    model = tiny_gpt()
    sd = model.state_dict()
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1.0
    with pytest.raises(ValueError, match="tied"):
        model.load_state_dict(sd)


def test_load_state_dict_error_lists_missing_unexpected_and_misshaped_together_and_loads_nothing():
    model = tiny_gpt()
    before = model.state_dict()
    sd = tiny_gpt(seed=5).state_dict()
    del sd["transformer.h.1.mlp.c_fc.bias"]
    sd["transformer.h.9.attn.c_attn.weight"] = np.zeros((3, 3))
    sd["transformer.ln_f.weight"] = np.ones(7)
    with pytest.raises(ValueError) as info:
        model.load_state_dict(sd)
    message = str(info.value)
    assert "missing" in message and "transformer.h.1.mlp.c_fc.bias" in message
    assert "unexpected" in message and "transformer.h.9.attn.c_attn.weight" in message
    assert "mis-shaped" in message and "transformer.ln_f.weight" in message and "(7,)" in message
    for name, array in model.state_dict().items():  # nothing was written
        np.testing.assert_array_equal(array, before[name], err_msg=name)


def test_load_state_dict_non_strict_returns_missing_and_unexpected_but_misshape_still_raises():
    model = tiny_gpt()
    source = tiny_gpt(seed=3)
    sd = source.state_dict()
    del sd["transformer.wpe.weight"]
    sd["extra.weight"] = np.zeros(2)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert missing == ["transformer.wpe.weight"] and unexpected == ["extra.weight"]
    np.testing.assert_array_equal(model.transformer.ln_f.weight.data, source.transformer.ln_f.weight.data)
    sd["transformer.ln_f.bias"] = np.zeros(3)
    with pytest.raises(ValueError, match="mis-shaped"):
        model.load_state_dict(sd, strict=False)


def test_load_state_dict_casts_to_the_parameter_dtype_in_place():
    model = tiny_gpt()
    weight = model.transformer.wpe.weight
    array_before = weight.data
    sd = {k: v.astype(np.float64) for k, v in tiny_gpt(seed=4).state_dict().items()}
    model.load_state_dict(sd)
    assert weight.data is array_before and weight.dtype == np.float32


# --- Module mechanics ---------------------------------------------------------------------------------


class TwoLayer(Module):
    def __init__(self):
        super().__init__()
        self.first = Linear(3, 4)
        self.scale = Parameter(np.ones(4))
        self.layers = [Linear(4, 4), Dropout(0.5)]  # a list of Modules becomes a ModuleList
        self.note = "not a parameter"

    def forward(self, x):
        x = self.first(x) * self.scale
        for layer in self.layers:
            x = layer(x)
        return x


def test_named_parameters_are_dotted_in_attribute_order():
    model = TwoLayer()
    assert isinstance(model.layers, ModuleList) and len(model.layers) == 2
    assert [n for n, _ in model.named_parameters()] == [
        "scale", "first.weight", "first.bias", "layers.0.weight", "layers.0.bias"]
    assert [n for n, _ in model.named_modules()] == ["", "first", "layers", "layers.0", "layers.1"]
    assert [type(c).__name__ for c in model.children()] == ["Linear", "ModuleList"]
    assert [n for n, _ in model.named_parameters(prefix="net")][0] == "net.scale"


def test_parameter_defaults_to_float32_and_requires_grad():
    p = Parameter(np.zeros(3))  # np.zeros is float64
    assert p.dtype == np.float32 and p.requires_grad
    assert Parameter(np.zeros(3), dtype=None).dtype == np.float64


def test_train_and_eval_recurse_into_every_submodule():
    model = tiny_gpt()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_requires_grad_false_on_a_submodule_freezes_only_it():
    model = tiny_gpt()
    model.transformer.h[0].requires_grad_(False)
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith("transformer.h.0.")), name
    idx = np.array([[1, 2, 3]])
    model(idx, idx)[1].backward()
    assert model.transformer.h[0].attn.c_attn.weight.grad is None
    assert model.transformer.h[1].attn.c_attn.weight.grad is not None


def test_zero_grad_clears_every_gradient():
    model = tiny_gpt()
    idx = np.array([[1, 2, 3]])
    model(idx, idx)[1].backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_to_float64_then_float32_converts_in_place_and_keeps_tie():
    model = tiny_gpt()
    params = list(model.parameters())
    original = [p.data.copy() for p in params]
    model.to(np.float64)
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert all(a is b for a, b in zip(params, model.parameters()))  # same Parameter objects
    assert model.lm_head.weight is model.transformer.wte.weight
    idx = np.array([[1, 2, 3]])
    logits, loss = model(idx, idx)
    assert logits.dtype == np.float64 and loss.dtype == np.float64
    model.to("float32")
    assert all(p.dtype == np.float32 for p in model.parameters())
    for p, a in zip(model.parameters(), original):
        np.testing.assert_array_equal(p.data, a)  # float32 -> float64 -> float32 is exact
    with pytest.raises(ValueError, match="float32 or float64"):
        model.to(np.float16)


def test_dropout_is_active_only_in_train_mode():
    layer = Dropout(0.5)
    x = Tensor(np.ones((200, 50), dtype=np.float32))
    tinyft.manual_seed(0)
    y = layer(x).data
    assert set(np.unique(y)) == {0.0, 2.0}
    assert 0.4 < (y == 0).mean() < 0.6
    layer.eval()
    assert layer(x) is x
    model = tiny_gpt(dropout=0.3)
    idx = np.array([[1, 2, 3, 4, 5]])
    assert not np.array_equal(model(idx)[0].data, model(idx)[0].data)  # train mode: two masks
    model.eval()
    np.testing.assert_array_equal(model(idx)[0].data, model(idx)[0].data)


def test_repr_is_a_tree_with_layer_sizes():
    text = repr(tiny_gpt(bias=False))
    assert text.startswith("GPT(\n  (transformer): ModuleDict(")
    assert "(0): Block(" in text and "(c_attn): Linear(in_features=8, out_features=24, bias=False)" in text
    assert "(lm_head): Linear(in_features=8, out_features=11, bias=False)" in text


# --- init -----------------------------------------------------------------------------------------------


def test_init_statistics_follow_gpt2():
    model = tiny_gpt(vocab_size=512, block_size=64, n_layer=4, n_head=4, n_embd=128)
    residual_std = 0.02 / math.sqrt(2 * 4)
    for name, p in model.named_parameters():
        data = p.data
        if name.endswith("c_proj.weight"):
            assert abs(data.std() / residual_std - 1) < 0.05, name
        elif name.endswith(".bias"):
            assert not data.any(), name
        elif ".ln_" in name:
            np.testing.assert_array_equal(data, 1.0, err_msg=name)
        else:  # wte, wpe, c_attn.weight, c_fc.weight
            assert abs(data.std() / 0.02 - 1) < 0.05, name
            assert abs(data.mean()) < 0.002, name


def test_manual_seed_makes_init_reproducible():
    a, b, c = tiny_gpt(seed=7), tiny_gpt(seed=7), tiny_gpt(seed=8)
    for name, array in a.state_dict().items():
        np.testing.assert_array_equal(array, b.state_dict()[name], err_msg=name)
    assert not np.array_equal(a.transformer.wte.weight.data, c.transformer.wte.weight.data)


# --- gradients -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_tiny_gpt_float64_passes_gradcheck_on_every_parameter(bias):
    model = tiny_gpt(seed=3, bias=bias).to(np.float64)
    # Move LayerNorm and bias parameters away from 1 and 0 so their gradients are not special cases.
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data += rng.normal(0, 0.1, p.shape)
    idx = np.array([[1, 5, 2, 9, 0], [10, 3, 3, 7, 4]])
    targets = np.array([[5, 2, 9, 0, 6], [3, 3, -1, 4, 8]])  # -1: ignored position
    params = list(model.parameters())

    def loss_fn(*_):
        return model(idx, targets)[1]

    assert gradcheck(loss_fn, params, max_elements=8, seed=0)


# --- one Block against an independent NumPy forward ----------------------------------------------------


def numpy_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def numpy_gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def numpy_gelu_exact(x):
    return np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))(x)


def numpy_block(x, sd, n_head, gelu=numpy_gelu):
    """A pre-LN transformer block from the formulas, sharing nothing with tinyft but the weights."""
    B, T, C = x.shape
    hd = C // n_head
    h = numpy_layer_norm(x, sd["ln_1.weight"], sd["ln_1.bias"])
    qkv = h @ sd["attn.c_attn.weight"].T + sd["attn.c_attn.bias"]  # (B, T, 3C)
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    out = np.zeros((B, T, C))
    for b in range(B):
        for head in range(n_head):
            cols = slice(head * hd, (head + 1) * hd)
            scores = q[b, :, cols] @ k[b, :, cols].T / np.sqrt(hd)  # (T, T)
            scores[np.triu_indices(T, 1)] = -np.inf
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            out[b, :, cols] = weights @ v[b, :, cols]
    x = x + out @ sd["attn.c_proj.weight"].T + sd["attn.c_proj.bias"]
    h = numpy_layer_norm(x, sd["ln_2.weight"], sd["ln_2.bias"])
    h = gelu(h @ sd["mlp.c_fc.weight"].T + sd["mlp.c_fc.bias"])
    return x + h @ sd["mlp.c_proj.weight"].T + sd["mlp.c_proj.bias"]


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
def test_block_forward_equals_plain_numpy_forward(gelu):
    tinyft.manual_seed(0)
    cfg = GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=3, n_embd=12, gelu=gelu)
    block = Block(cfg).to(np.float64)
    rng = np.random.default_rng(1)
    for p in block.parameters():
        p.data[...] = rng.normal(0, 0.5, p.shape)  # non-trivial LN scales and biases too
    x = rng.normal(size=(2, 7, 12))
    expected = numpy_block(x, block.state_dict(), cfg.n_head, numpy_gelu if gelu == "tanh" else numpy_gelu_exact)
    np.testing.assert_allclose(block(Tensor(x)).data, expected, rtol=1e-10, atol=1e-10)


def test_attention_output_at_position_t_ignores_later_tokens():
    model = tiny_gpt().eval()
    a = np.array([[1, 2, 3, 4, 5, 6]])
    b = np.array([[1, 2, 3, 9, 0, 10]])
    np.testing.assert_allclose(model(a)[0].data[:, :3], model(b)[0].data[:, :3], rtol=1e-6)


# --- training --------------------------------------------------------------------------------------------


def test_tiny_gpt_overfits_one_batch_below_0_05():
    model = tiny_gpt(seed=0, n_embd=16)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 11, size=(4, 9))
    idx, targets = batch[:, :-1], batch[:, 1:]
    params = list(model.parameters())
    m = [np.zeros_like(p.data) for p in params]
    v = [np.zeros_like(p.data) for p in params]
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.99, 1e-8
    for step in range(1, 301):  # plain Adam, written out (optim.py is tested on its own)
        model.zero_grad()
        _, loss = model(idx, targets)
        loss.backward()
        for p, mi, vi in zip(params, m, v):
            mi[...] = beta1 * mi + (1 - beta1) * p.grad
            vi[...] = beta2 * vi + (1 - beta2) * p.grad**2
            p.data -= lr * (mi / (1 - beta1**step)) / (np.sqrt(vi / (1 - beta2**step)) + eps)
        if loss.item() < 0.05:
            break
    assert model(idx, targets)[1].item() < 0.05


# --- generate -----------------------------------------------------------------------------------------


def test_generate_returns_int64_of_shape_b_by_t_plus_new():
    model = tiny_gpt()
    out = model.generate(np.array([[1, 2], [3, 4], [5, 6]]), max_new_tokens=5)
    assert out.shape == (3, 7) and out.dtype == np.int64
    np.testing.assert_array_equal(out[:, :2], [[1, 2], [3, 4], [5, 6]])
    assert out.min() >= 0 and out.max() < 11


def test_generate_with_the_same_seed_is_deterministic():
    model = tiny_gpt()
    idx = np.array([[1, 2, 3]])
    a = model.generate(idx, 20, seed=123)
    b = model.generate(idx, 20, seed=123)
    np.testing.assert_array_equal(a, b)
    tinyft.manual_seed(9)
    c = model.generate(idx, 20)
    tinyft.manual_seed(9)
    np.testing.assert_array_equal(c, model.generate(idx, 20))


def greedy_by_hand(model, idx, n):
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size:])
        idx = np.concatenate([idx, logits.data[:, -1].argmax(-1)[:, None]], axis=1)
    return idx


def test_generate_top_k_1_and_temperature_0_equal_greedy_argmax():
    model = tiny_gpt(seed=4)
    for p in model.parameters():  # sharpen the model so greedy paths are clearly defined
        p.data *= 5
    idx = np.array([[1, 2, 3], [4, 4, 4]])
    expected = greedy_by_hand(model, idx, 12)
    np.testing.assert_array_equal(model.generate(idx, 12, top_k=1, seed=0), expected)
    np.testing.assert_array_equal(model.generate(idx, 12, temperature=0), expected)


def test_generate_crops_contexts_longer_than_block_size():
    model = tiny_gpt()
    long_idx = np.arange(20).reshape(1, 20) % 11  # T = 20 > block_size = 8
    out = model.generate(long_idx, 5, temperature=0)
    assert out.shape == (1, 25)
    np.testing.assert_array_equal(out, greedy_by_hand(model, long_idx, 5))
    np.testing.assert_array_equal(out[:, 20:], model.generate(long_idx[:, -8:], 5, temperature=0)[:, 8:])


def test_generate_restores_training_mode_and_records_no_graph():
    model = tiny_gpt(dropout=0.2)
    model.generate(np.array([[1]]), 3, seed=0)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("idx, match", [
    (np.array([[1.0, 2.0]]), "idx must hold integer token ids"),
    (np.array([1, 2, 3]), r"idx must be 2-D \(B, T\).*idx\[None, :\]"),
    (np.zeros((1, 2, 3), dtype=int), "idx must be 2-D"),
    (np.array([[1, 11]]), r"idx ids must lie in \[0, vocab_size=11\)"),
    (np.array([[-1, 2]]), r"idx ids must lie in \[0, vocab_size=11\)"),
    (np.zeros((1, 9), dtype=int), r"idx has T=9 positions but block_size is 8; crop it: idx\[:, -8:\]"),
    (np.zeros((1, 0), dtype=int), "at least one"),
])
def test_forward_rejects_bad_idx_naming_argument_and_limit(idx, match):
    with pytest.raises(ValueError, match=match):
        tiny_gpt()(idx)


@pytest.mark.parametrize("targets, match", [
    (np.array([[1, 2]]), r"targets has shape \(1, 2\) but idx has \(1, 3\)"),
    (np.array([[1.0, 2.0, 3.0]]), "targets must hold integer"),
    (np.array([[1, 2, 11]]), r"targets must lie in \[0, vocab_size=11\) or be -1"),
])
def test_forward_rejects_bad_targets(targets, match):
    with pytest.raises(ValueError, match=match):
        tiny_gpt()(np.array([[1, 2, 3]]), targets)


def test_forward_accepts_integer_tensor_and_list_idx():
    model = tiny_gpt()
    a = model(np.array([[1, 2]]))[0].data
    np.testing.assert_array_equal(model(Tensor(np.array([[1, 2]])))[0].data, a)
    np.testing.assert_array_equal(model([[1, 2]])[0].data, a)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(top_k=0), "top_k must be None or an int >= 1"),
    (dict(max_new_tokens=-1), "max_new_tokens must be an int >= 0"),
])
def test_generate_rejects_bad_arguments(kwargs, match):
    args = dict(max_new_tokens=3, **kwargs) if "max_new_tokens" not in kwargs else kwargs
    with pytest.raises(ValueError, match=match):
        tiny_gpt().generate(np.array([[1]]), **args)
    with pytest.raises(ValueError, match="idx ids must lie"):
        tiny_gpt().generate(np.array([[99]]), 3)


@pytest.mark.parametrize("field, value", [("vocab_size", 0), ("block_size", -1), ("n_layer", 1.5),
                                          ("n_head", 0), ("n_embd", True), ("dropout", 1.0), ("bias", "yes"),
                                          ("gelu", "erf"), ("gelu", None), ("gelu", True)])
def test_gpt_config_rejects_bad_field_naming_it(field, value):
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{**TINY, field: value})


def test_gpt_config_requires_n_embd_divisible_by_n_head_and_round_trips_dict():
    with pytest.raises(ValueError, match="n_embd=10 must be divisible by n_head=3"):
        GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=3, n_embd=10)
    cfg = GPTConfig(**TINY, dropout=0.1, bias=False)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        GPTConfig.from_dict({**TINY, "n_positions": 3})
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig.from_dict({k: v for k, v in TINY.items() if k != "n_embd"})


def test_gpt_config_gelu_defaults_to_tanh_round_trips_and_older_dicts_load_as_tanh():
    assert GPTConfig(**TINY).gelu == "tanh"
    exact = GPTConfig(**TINY, gelu="exact")
    assert exact.to_dict()["gelu"] == "exact" and GPTConfig.from_dict(exact.to_dict()) == exact
    older = {k: v for k, v in exact.to_dict().items() if k != "gelu"}  # saved before the field existed
    assert GPTConfig.from_dict(older).gelu == "tanh"
    with pytest.raises(ValueError, match="gelu must be one of 'tanh', 'exact'"):
        GPTConfig(**TINY, gelu="none")


def test_mlp_uses_the_gelu_its_config_names():
    tinyft.manual_seed(0)
    x = Tensor(np.random.default_rng(0).normal(size=(2, 3, 8)))
    outputs = {}
    for kind in ("tanh", "exact"):
        tinyft.manual_seed(0)  # the same weights for both
        mlp = MLP(GPTConfig(**TINY, gelu=kind)).to(np.float64)
        mlp.c_fc.weight.data *= 50  # pre-activations of order 1, where the two GELUs differ (by up to 4.7e-4)
        h = x.data @ mlp.c_fc.weight.data.T + mlp.c_fc.bias.data
        act = numpy_gelu(h) if kind == "tanh" else numpy_gelu_exact(h)
        np.testing.assert_allclose(mlp(x).data, act @ mlp.c_proj.weight.data.T + mlp.c_proj.bias.data, rtol=1e-10)
        outputs[kind] = mlp(x).data
    assert np.abs(outputs["tanh"] - outputs["exact"]).max() > 1e-6


def test_layers_wrap_functional_ops_with_torch_shapes():
    tinyft.manual_seed(0)
    lin = Linear(3, 5)
    assert lin.weight.shape == (5, 3) and lin.bias.shape == (5,)
    x = Tensor(np.ones((2, 3), dtype=np.float32))
    np.testing.assert_array_equal(lin(x).data, F.linear(x, lin.weight, lin.bias).data)
    emb = Embedding(7, 4)
    np.testing.assert_array_equal(emb(np.array([6, 0])).data, emb.weight.data[[6, 0]])
    ln = LayerNorm(4, bias=False)
    assert ln.bias is None and [n for n, _ in ln.named_parameters()] == ["weight"]
    cfg = GPTConfig(**TINY)
    assert [n for n, _ in MLP(cfg).named_parameters()] == ["c_fc.weight", "c_fc.bias", "c_proj.weight", "c_proj.bias"]
    assert CausalSelfAttention(cfg)(Tensor(np.zeros((2, 5, 8), dtype=np.float32))).shape == (2, 5, 8)
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(1.0)
