"""Optimizers against updates computed by hand, param groups, frozen parameters, schedules and clipping."""

import math

import numpy as np
import pytest

from tinyft.autograd import Tensor
from tinyft.nn import GPT, GPTConfig
from tinyft.optim import (SGD, Adam, AdamW, LRScheduler, clip_grad_norm, cosine_schedule,
                          param_groups_for_weight_decay, set_lr)


def make_param(seed, shape=(3, 4), dtype=np.float64):
    return Tensor(np.random.default_rng(seed).normal(size=shape).astype(dtype), requires_grad=True)


def fixed_grads(shape, n=2, seed=100):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) for _ in range(n)]


# --- two steps equal the textbook formulas ------------------------------------------------------------


def test_sgd_momentum_weight_decay_two_steps_equal_hand_computed():
    p = make_param(0)
    theta = p.data.copy()
    lr, mu, wd = 0.1, 0.9, 0.01
    opt = SGD([p], lr=lr, momentum=mu, weight_decay=wd)
    buf = np.zeros_like(theta)
    for g in fixed_grads(p.shape):
        p.grad = g.copy()
        opt.step()
        d = g + wd * theta
        buf = mu * buf + d
        theta = theta - lr * buf
    np.testing.assert_allclose(p.data, theta, rtol=1e-13, atol=1e-15)


def test_sgd_without_momentum_is_plain_gradient_descent():
    p = make_param(1)
    theta = p.data.copy()
    opt = SGD([p], lr=0.5)
    for g in fixed_grads(p.shape):
        p.grad = g.copy()
        opt.step()
        theta = theta - 0.5 * g
    np.testing.assert_allclose(p.data, theta, rtol=1e-13, atol=1e-15)
    assert opt.state == {}


def adam_by_hand(theta, grads, lr, b1, b2, eps, wd, decoupled):
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            theta = theta - lr * wd * theta
        else:
            g = g + wd * theta
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


@pytest.mark.parametrize("cls, decoupled", [(Adam, False), (AdamW, True)])
def test_adam_and_adamw_two_steps_equal_hand_computed(cls, decoupled):
    p = make_param(2)
    lr, betas, eps, wd = 0.01, (0.8, 0.95), 1e-6, 0.1
    expected = adam_by_hand(p.data.copy(), fixed_grads(p.shape), lr, *betas, eps, wd, decoupled)
    opt = cls([p], lr=lr, betas=betas, eps=eps, weight_decay=wd)
    for g in fixed_grads(p.shape):
        p.grad = g.copy()
        opt.step()
    np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-14)
    assert opt.state[0]["step"] == 2


def test_adam_and_adamw_differ_when_weight_decay_is_on():
    a, b = make_param(3), make_param(3)
    opt_a, opt_b = Adam([a], lr=0.01, weight_decay=0.1), AdamW([b], lr=0.01, weight_decay=0.1)
    for g in fixed_grads(a.shape):
        a.grad, b.grad = g.copy(), g.copy()
        opt_a.step()
        opt_b.step()
    assert not np.allclose(a.data, b.data)


# --- weight decay groups --------------------------------------------------------------------------------


def test_adamw_decays_the_decay_group_and_leaves_the_no_decay_group_bit_identical():
    decayed, not_decayed = make_param(4), make_param(5, shape=(4,))
    before_decayed, before_not = decayed.data.copy(), not_decayed.data.copy()
    opt = AdamW([{"params": [decayed], "weight_decay": 0.1},
                 {"params": [not_decayed], "weight_decay": 0.0}], lr=0.1)
    for _ in range(3):
        decayed.grad = np.zeros(decayed.shape)
        not_decayed.grad = np.zeros(not_decayed.shape)
        opt.step()
    assert np.array_equal(not_decayed.data, before_not)
    np.testing.assert_allclose(decayed.data, before_decayed * (1 - 0.1 * 0.1) ** 3, rtol=1e-13)


def test_param_groups_for_weight_decay_decays_only_linear_weights_of_a_gpt():
    model = GPT(GPTConfig(vocab_size=11, block_size=4, n_layer=1, n_head=2, n_embd=8))
    decay, no_decay = param_groups_for_weight_decay(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["names"] == ["transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.weight",
                              "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight"]
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
            "transformer.h.0.attn.c_attn.bias", "transformer.ln_f.bias"} <= set(no_decay["names"])
    assert any(p is model.lm_head.weight for p in no_decay["params"])  # tied to wte: not decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    AdamW([decay, no_decay])  # accepted as param groups


# --- frozen parameters, param groups, duplicates ----------------------------------------------------------


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_frozen_parameter_is_bit_identical_and_has_no_state(cls):
    trained, frozen = make_param(20), make_param(21)
    frozen.requires_grad = False
    before = frozen.data.copy()
    opt = cls([trained, frozen], lr=0.1, **({"momentum": 0.9} if cls is SGD else {}), weight_decay=0.1)
    for g in fixed_grads(trained.shape, n=4):
        trained.grad, frozen.grad = g.copy(), g.copy()  # even a stray gradient must not move it
        opt.step()
    assert np.array_equal(frozen.data, before)
    assert set(opt.state) == {0}  # state for the trained parameter (index 0) only


def test_parameter_without_grad_is_skipped_that_step():
    a, b = make_param(22), make_param(23)
    before = b.data.copy()
    opt = Adam([a, b], lr=0.1)
    a.grad = np.ones(a.shape)
    opt.step()
    assert np.array_equal(b.data, before) and 1 not in opt.state


def test_param_groups_use_their_own_lr_and_take_defaults_for_missing_keys():
    fast, slow = make_param(24), make_param(25)
    f0, s0 = fast.data.copy(), slow.data.copy()
    opt = SGD([{"params": [fast], "lr": 1.0}, {"params": [slow]}], lr=0.01)
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[1]["momentum"] == 0.0
    g = np.ones(fast.shape)
    fast.grad, slow.grad = g.copy(), g.copy()
    opt.step()
    np.testing.assert_allclose(fast.data, f0 - 1.0 * g)
    np.testing.assert_allclose(slow.data, s0 - 0.01 * g)


def test_same_parameter_in_two_groups_is_a_value_error():
    p = make_param(26)
    with pytest.raises(ValueError, match="appears twice"):
        Adam([{"params": [p]}, {"params": [p]}])


def test_bad_hyperparameters_are_value_errors():
    with pytest.raises(ValueError, match="lr"):
        SGD([make_param(0)], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        Adam([make_param(0)], betas=(0.9, 1.0))


def test_zero_grad_sets_grads_to_none():
    p = make_param(27)
    p.grad = np.ones(p.shape)
    opt = SGD([p], lr=0.1)
    opt.zero_grad()
    assert p.grad is None


# --- state_dict -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_state_dict_round_trip_continues_identically(cls):
    kwargs = {"lr": 0.05, "momentum": 0.9} if cls is SGD else {"lr": 0.05}
    grads = fixed_grads((3, 4), n=5)
    p = make_param(30)
    opt = cls([p], **kwargs)
    for g in grads[:2]:
        p.grad = g.copy()
        opt.step()
    saved_params, saved_state = p.data.copy(), opt.state_dict()
    for g in grads[2:]:
        p.grad = g.copy()
        opt.step()

    q = Tensor(saved_params.copy(), requires_grad=True)
    opt2 = cls([q], lr=123.0)  # the lr comes back from the state dict
    opt2.load_state_dict(saved_state)
    assert opt2.param_groups[0]["lr"] == 0.05
    for g in grads[2:]:
        q.grad = g.copy()
        opt2.step()
    assert np.array_equal(p.data, q.data)


def test_state_dict_is_a_snapshot_not_a_view():
    p = make_param(31)
    opt = Adam([p])
    p.grad = np.ones(p.shape)
    opt.step()
    sd = opt.state_dict()
    m_before = sd["state"][0]["m"].copy()
    opt.step()
    assert np.array_equal(sd["state"][0]["m"], m_before)


def test_load_state_dict_rejects_wrong_shapes_counts_and_class():
    p = make_param(32)
    opt = Adam([p])
    p.grad = np.ones(p.shape)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="shape"):
        Adam([make_param(33, shape=(2, 2))]).load_state_dict(sd)
    with pytest.raises(ValueError, match="1 parameters in the state but 2"):
        Adam([make_param(34), make_param(35)]).load_state_dict(sd)
    with pytest.raises(ValueError, match="saved by 'Adam'"):
        AdamW([make_param(36)]).load_state_dict(sd)


# --- check_finite ------------------------------------------------------------------------------------------


def test_check_finite_names_the_parameter_and_updates_nothing():
    good, bad = make_param(40), make_param(41)
    before_good, before_bad = good.data.copy(), bad.data.copy()
    opt = AdamW([{"params": [good, bad], "names": ["h.0.good.weight", "h.0.bad.weight"]}], check_finite=True)
    good.grad = np.ones(good.shape)
    bad.grad = np.ones(bad.shape)
    bad.grad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"parameter 1 \('h.0.bad.weight'\).*1 NaN/inf"):
        opt.step()
    assert np.array_equal(good.data, before_good) and np.array_equal(bad.data, before_bad)


# --- schedules -------------------------------------------------------------------------------------------------


def test_cosine_schedule_values_by_hand():
    kw = dict(max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert cosine_schedule(0, **kw) == 0.0  # warmup starts at 0
    assert cosine_schedule(5, **kw) == 0.5  # halfway through warmup
    assert cosine_schedule(10, **kw) == 1.0  # warmup ends at max_lr
    assert math.isclose(cosine_schedule(60, **kw), 0.1 + 0.9 * 0.5)  # cosine midpoint: halfway to min_lr
    assert math.isclose(cosine_schedule(35, **kw), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert math.isclose(cosine_schedule(110, **kw), 0.1)  # end
    assert cosine_schedule(500, **kw) == 0.1  # after the end


def test_lr_scheduler_and_set_lr_drive_every_group():
    p, q = make_param(50), make_param(51)
    opt = AdamW([{"params": [p]}, {"params": [q], "lr_scale": 0.5}])
    sched = LRScheduler(opt, max_lr=1.0, warmup_steps=4, total_steps=8)
    assert opt.param_groups[0]["lr"] == 0.0
    sched.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[1]["lr"] == 0.25
    set_lr(opt, 0.3)
    assert opt.param_groups[0]["lr"] == 0.3 and opt.param_groups[1]["lr"] == 0.15


# --- clipping ------------------------------------------------------------------------------------------------


def test_clip_grad_norm_returns_pre_clip_norm_and_clips_to_max_norm():
    a, b, c = make_param(60), make_param(61, shape=(5,)), make_param(62)
    a.grad, b.grad = np.full(a.shape, 3.0), np.full(b.shape, -4.0)  # c has no grad: skipped
    expected = math.sqrt(12 * 9 + 5 * 16)
    total = clip_grad_norm([a, b, c], max_norm=1.0)
    assert math.isclose(total, expected)
    after = math.sqrt(np.sum(a.grad**2) + np.sum(b.grad**2))
    assert math.isclose(after, 1.0, rel_tol=1e-12)


def test_clip_grad_norm_leaves_small_and_zero_gradients_alone():
    p = make_param(63)
    p.grad = np.full(p.shape, 0.01)
    g = p.grad.copy()
    assert clip_grad_norm([p], max_norm=1.0) < 1.0 and np.array_equal(p.grad, g)
    p.grad = np.zeros(p.shape)
    assert clip_grad_norm([p], max_norm=1.0) == 0.0 and not np.any(p.grad)


# --- dtypes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_float32_params_and_state_stay_float32(cls):
    p = make_param(70, dtype=np.float32)
    data_array = p.data
    opt = cls([p], lr=0.1, **({"momentum": 0.9} if cls is SGD else {}), weight_decay=0.1)
    for g in fixed_grads(p.shape):
        p.grad = g.astype(np.float32)
        opt.step()
    clip_grad_norm([p], 1e-3)
    assert p.data.dtype == np.float32 and p.grad.dtype == np.float32
    assert p.data is data_array  # updated in place
    assert all(v.dtype == np.float32 for v in opt.state[0].values() if isinstance(v, np.ndarray))
