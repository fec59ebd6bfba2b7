"""Forgetting: the measurements mean what they say, the mitigations' penalties and Fisher are right, replay at
0 is plain fine-tuning, WiSE-FT's ends are its two models, full fine-tuning at a high lr forgets more than
LoRA or a low lr (a real run). (The sweep: test_experiments.py.)"""

import numpy as np
import pytest

from conftest import quiet

from tinyft import checkpoint
from tinyft import forgetting as fg
from tinyft.autograd import manual_seed
from tinyft.finetune import FinetuneConfig, apply_strategy, finetune
from tinyft.gradcheck import gradcheck
from tinyft.nn import GPT, GPTConfig


def ft_config(**overrides):
    settings = dict(steps=4, batch_size=4, warmup_steps=1, eval_every=2, lr=3e-3, out=None, seed=0)
    settings.update(overrides)
    return FinetuneConfig(**settings)


def tiny_float64_gpt(seed=0, vocab=7, n_embd=4):
    """A 1-layer GPT in float64 whose weights are spread out (std 0.5) so every gradient is well above rounding."""
    manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=6, n_layer=1, n_head=1, n_embd=n_embd)).to(np.float64)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.normal(0.0, 0.5, p.shape)
    return model


# --- measurements ------------------------------------------------------------------------------------


def test_no_finetuning_gives_exactly_zero_forgetting_and_zero_gain(source_run):
    model = checkpoint.load_model(source_run["path"])
    before = fg.source_loss(model, source_run["measure"])
    result = finetune(model, source_run["task"], ft_config(steps=0), progress=False, log=quiet)
    after = fg.source_loss(result.model, source_run["measure"])
    assert fg.forgetting(before, after) == 0.0
    assert fg.target_gain(result.before["test"]["loss"], result.after["test"]["loss"], False) == 0.0
    assert fg.perplexity(before) == pytest.approx(np.exp(before))


def test_sign_convention_positive_forgetting_means_worse_and_positive_gain_means_better():
    assert fg.forgetting(before=2.0, after=2.5) == pytest.approx(0.5)  # source loss rose: forgot
    assert fg.target_gain(before=2.0, after=1.5, higher_is_better=False) == pytest.approx(0.5)  # loss fell
    assert fg.target_gain(before=0.6, after=0.8, higher_is_better=True) == pytest.approx(0.2)  # accuracy rose


def test_source_loss_callback_records_the_curve_every_n_steps_only(source_run):
    callback = fg.source_loss_callback(source_run["measure"], every=2)
    model = checkpoint.load_model(source_run["path"])
    result = finetune(model, source_run["task"], ft_config(steps=4, eval_every=2), callback=callback,
                      progress=False, log=quiet)
    assert [row["step"] for row in result.history if "source_loss" in row] == [2, 4]
    assert result.history[-1]["source_loss"] == fg.source_loss(result.model, source_run["measure"])
    curve = fg.learning_forgetting_curve(result.history, 1.0, 2.0, "loss", False)
    assert [p["step"] for p in curve] == [0, 2, 4]
    assert curve[2]["forgetting"] == pytest.approx(result.history[-1]["source_loss"] - 1.0)
    assert curve[2]["target_gain"] == pytest.approx(2.0 - result.history[-1]["val_loss"])


def test_pareto_front_keeps_exactly_the_undominated_points():
    points = [{"target_gain": 0.5, "forgetting": 0.3},  # best gain
              {"target_gain": 0.4, "forgetting": 0.1},  # a trade-off
              {"target_gain": 0.3, "forgetting": 0.2},  # dominated by the one above
              {"target_gain": 0.0, "forgetting": 0.0},  # forgets least
              {"target_gain": 0.5, "forgetting": 0.4}]  # same gain as the first, more forgetting
    assert fg.pareto_front(points) == [True, True, False, True, False]


# --- the task-sequence matrix R[i, j] -----------------------------------------------------------------

R = np.array([[0.90, 0.20, 0.10],   # after stage 0 (trained on task 0)
              [0.70, 0.80, 0.30],   # after stage 1
              [0.60, 0.50, 0.85]])  # after stage 2


def test_average_accuracy_bwt_fwt_and_forgetting_measure_match_hand_computed_values():
    assert fg.average_accuracy(R) == pytest.approx((0.60 + 0.50 + 0.85) / 3)
    # BWT = mean over j < 2 of R[2, j] - R[j, j] = ((0.6 - 0.9) + (0.5 - 0.8)) / 2
    assert fg.backward_transfer(R) == pytest.approx(-0.30)
    # FWT = mean over j >= 1 of R[j-1, j] - b_j with b = (., 0.25, 0.05): ((0.2 - 0.25) + (0.3 - 0.05)) / 2
    assert fg.forward_transfer(R, [0.0, 0.25, 0.05]) == pytest.approx(0.10)
    # forgetting: j = 0: max(0.9, 0.7) - 0.6 = 0.3; j = 1: max(0.2, 0.8) - 0.5 = 0.3
    assert fg.forgetting_measure(R) == pytest.approx(0.30)


def test_forgetting_measure_uses_the_best_earlier_stage_not_the_diagonal():
    # task 0 kept improving during stage 1 (0.5 -> 0.8), then stage 2 dropped it to 0.6: BWT sees a gain
    # over the diagonal (+0.1), the forgetting measure sees the drop from the best (0.8 -> 0.6)
    R3 = np.array([[0.5, 0.1, 0.1], [0.8, 0.9, 0.2], [0.6, 0.9, 0.7]])
    assert fg.forgetting_measure(R3) == pytest.approx(((0.8 - 0.6) + (0.9 - 0.9)) / 2)
    assert fg.backward_transfer(R3) == pytest.approx(((0.6 - 0.5) + (0.9 - 0.9)) / 2)


def test_forgetting_measure_is_negative_when_a_task_gets_better_at_the_last_stage():
    # Task 0 improves at every stage (0.5 -> 0.6 -> 0.9): it was never better before the last stage than
    # at it, so its forgetting is negative. The max runs over the stages BEFORE the last one only; taking
    # it over all stages would clip task 0 at 0 and give (0 + 0.1) / 2 = 0.05 instead.
    R_up = np.array([[0.5, 0.1, 0.1],   # after stage 0
                     [0.6, 0.8, 0.2],   # after stage 1
                     [0.9, 0.7, 0.9]])  # after stage 2: task 0 better than ever, task 1 down from 0.8
    by_hand = ((max(0.5, 0.6) - 0.9) + (max(0.1, 0.8) - 0.7)) / 2  # (-0.3 + 0.1) / 2 = -0.1
    assert fg.forgetting_measure(R_up) == pytest.approx(by_hand) == pytest.approx(-0.1)
    assert fg.forgetting_measure(1.0 - R_up, higher_is_better=False) == pytest.approx(-0.1)  # as losses


def test_loss_matrices_flip_the_signs_so_positive_forgetting_still_means_worse():
    L = 1.0 - R  # a "loss" that falls as accuracy rises
    assert fg.backward_transfer(L, higher_is_better=False) == pytest.approx(fg.backward_transfer(R))
    assert fg.forgetting_measure(L, higher_is_better=False) == pytest.approx(fg.forgetting_measure(R))
    assert fg.forward_transfer(L, 1.0 - np.array([0.0, 0.25, 0.05]), higher_is_better=False) == pytest.approx(0.10)


def test_task_matrix_metrics_reject_a_non_square_matrix():
    with pytest.raises(ValueError, match="square"):
        fg.backward_transfer(np.ones((2, 3)))
    with pytest.raises(ValueError, match="baseline"):
        fg.forward_transfer(R, [0.1, 0.2])


# --- weight drift and effective rank ------------------------------------------------------------------


def test_effective_rank_is_r_for_r_equal_singular_values_and_zero_for_no_change():
    rng = np.random.default_rng(0)
    q1, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    q2, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    for r in (1, 3, 5):
        delta = q1[:, :r] @ q2[:, :r].T * 2.5  # (12, 9), r singular values all 2.5
        assert fg.effective_rank(delta) == pytest.approx(r)
    assert fg.effective_rank(np.zeros((4, 3))) == 0.0
    assert 1.0 < fg.effective_rank(q1[:, :2] @ np.diag([3.0, 1.0]) @ q2[:, :2].T) < 2.0


def test_weight_drift_is_the_relative_norm_of_the_change_per_parameter():
    pre = {"a": np.array([3.0, 4.0]), "b": np.zeros(2), "c": np.ones(2)}
    post = {"a": np.array([3.0, 5.0]), "b": np.array([0.0, 1.0]), "c": np.ones(2)}
    assert fg.weight_drift(pre, post) == {"a": pytest.approx(1 / 5), "b": float("inf"), "c": 0.0}


def test_lora_changes_are_low_rank_and_full_finetuning_changes_are_not(source_run):
    ranks = {}
    for strategy in ("full", "lora"):
        model = checkpoint.load_model(source_run["path"])
        pre = model.state_dict()
        result = finetune(model, source_run["task"], ft_config(strategy=strategy, steps=6, lora_rank=2, lr=1e-2),
                          progress=False, log=quiet)
        post = fg.effective_state(result.model)
        name = "transformer.h.0.attn.c_attn.weight"
        ranks[strategy] = fg.delta_effective_ranks(pre, post, [name])[name][0]
        assert fg.weight_drift(pre, post)[name] > 0
    assert 0 < ranks["lora"] <= 2.0 + 1e-9
    assert ranks["full"] > 4 * ranks["lora"]


# --- mitigations ---------------------------------------------------------------------------------------


def test_fisher_diagonal_equals_brute_force_per_example_finite_differences():
    model = tiny_float64_gpt()
    rng = np.random.default_rng(1)
    x = rng.integers(0, 7, size=(3, 5))
    y = rng.integers(0, 7, size=(3, 5))
    y[1, :2] = -1  # masked positions: the example's log-likelihood is the mean over its counted ones
    fisher = fg.fisher_diagonal(model, [(x[:2], y[:2]), (x[2:], y[2:])])  # batching must not matter
    checked = 0
    for name, p in model.named_parameters():
        for flat in rng.choice(p.size, size=min(p.size, 3), replace=False):
            index = np.unravel_index(flat, p.shape)
            squares = []
            for n in range(3):  # brute force: each example alone, central differences, squared
                original = p.data[index]
                p.data[index] = original + 1e-6
                up = model(x[n:n + 1], y[n:n + 1])[1].item()
                p.data[index] = original - 1e-6
                down = model(x[n:n + 1], y[n:n + 1])[1].item()
                p.data[index] = original
                squares.append(((up - down) / 2e-6) ** 2)
            assert fisher[name][index] == pytest.approx(np.mean(squares), rel=1e-5, abs=1e-10), (name, index)
            checked += 1
    assert checked > 30
    np.testing.assert_array_equal(fisher["lm_head.weight"], fisher["transformer.wte.weight"])  # tied: one matrix


def test_fisher_diagonal_restores_frozen_flags_and_clears_gradients():
    model = tiny_float64_gpt()
    apply_strategy(model, "bitfit")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    x = np.random.default_rng(0).integers(0, 7, size=(2, 5))
    fisher = fg.fisher_diagonal(model, [(x, np.roll(x, -1, axis=1))])
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(fisher[n].any() for n in flags)  # frozen parameters get a Fisher entry too


def _moved(model, seed=3):
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data += rng.normal(0.0, 0.1, p.shape)


def test_ewc_penalty_passes_gradcheck_and_equals_its_formula():
    model = tiny_float64_gpt()
    x = np.random.default_rng(0).integers(0, 7, size=(2, 5))
    ewc = fg.EWC(model, [(x, np.roll(x, -1, axis=1))], lam=3.0)
    assert ewc.penalty(model).item() == 0.0  # at theta* the penalty vanishes
    _moved(model)
    expected = 1.5 * sum((ewc.fisher[n] * (p.data - ewc.anchor[n]) ** 2).sum() for n, p in model.named_parameters())
    assert ewc.penalty(model).item() == pytest.approx(expected, rel=1e-12)
    params = list(model.parameters())
    assert gradcheck(lambda *_: ewc.penalty(model), params, max_elements=20)


def test_l2sp_penalty_passes_gradcheck_and_equals_its_formula():
    model = tiny_float64_gpt()
    l2sp = fg.L2SP(model, alpha=0.7)
    _moved(model)
    expected = 0.35 * sum(((p.data - l2sp.anchor[n]) ** 2).sum() for n, p in model.named_parameters())
    assert l2sp.penalty(model).item() == pytest.approx(expected, rel=1e-12)
    assert gradcheck(lambda *_: l2sp.penalty(model), list(model.parameters()), max_elements=20)


def test_penalties_reach_lora_through_the_effective_weight_and_skip_frozen_parameters():
    model = tiny_float64_gpt()
    l2sp = fg.L2SP(model, alpha=1.0)
    apply_strategy(model, "lora", lora_rank=2, lora_targets=("c_attn",))
    layer = model.transformer.h[0].attn.c_attn
    assert l2sp.penalty(model).item() == 0.0  # B = 0: the effective weight is still the anchor
    layer.lora_B.data[...] = np.random.default_rng(0).normal(size=layer.lora_B.shape)
    expected = 0.5 * (layer.delta_weight() ** 2).sum()
    assert l2sp.penalty(model).item() == pytest.approx(expected, rel=1e-12)
    assert gradcheck(lambda *_: l2sp.penalty(model), [layer.lora_A, layer.lora_B])


def test_replay_at_fraction_zero_equals_plain_finetuning_bit_for_bit(source_run):
    runs = []
    for mitigations in ((), (fg.Replay(source_run["source_train"], 0.0),)):
        model = checkpoint.load_model(source_run["path"])
        result = finetune(model, source_run["task"], ft_config(steps=5), mitigations=mitigations, progress=False,
                          log=quiet)
        runs.append((result.model.state_dict(), [row["train_loss"] for row in result.history]))
    (a, losses_a), (b, losses_b) = runs
    assert losses_a == losses_b
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_replay_replaces_round_fraction_times_b_rows_with_source_windows():
    source = np.arange(1000, 2000)
    replay = fg.Replay(source, 0.25)
    x = np.zeros((8, 5), dtype=np.int64)
    y = np.zeros((8, 5), dtype=np.int64)
    mx, my = replay.mix_batch(x, y, np.random.default_rng(0))
    assert (mx[:6] == 0).all() and (mx[6:] >= 1000).all()  # round(0.25 * 8) = 2 source rows, at the end
    np.testing.assert_array_equal(my[6:], mx[6:] + 1)  # next-token targets of the same windows
    assert (x == 0).all()  # the task's arrays are not changed in place
    with pytest.raises(ValueError, match="fraction"):
        fg.Replay(source, 1.5)


def test_wise_ft_at_0_and_1_equals_its_endpoints():
    manual_seed(0)
    a = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16)).state_dict()
    manual_seed(1)
    b = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16)).state_dict()
    for name in a:
        np.testing.assert_array_equal(fg.wise_ft(a, b, 0.0)[name], a[name])
        np.testing.assert_array_equal(fg.wise_ft(a, b, 1.0)[name], b[name])
        np.testing.assert_allclose(fg.wise_ft(a, b, 0.5)[name], (a[name] + b[name]) / 2, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="different names"):
        fg.wise_ft(a, {**b, "extra": np.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        fg.wise_ft(a, {**b, "transformer.wpe.weight": np.zeros((3, 3))}, 0.5)


# --- a real run: what forgets more --------------------------------------------------------------------


def test_full_finetuning_at_a_high_lr_forgets_more_than_lora_or_a_low_lr(source_run):
    amount = {}
    for name, strategy, lr in (("full high", "full", 1e-2), ("lora high", "lora", 1e-2), ("full low", "full", 1e-4)):
        model = checkpoint.load_model(source_run["path"])
        before = fg.source_loss(model, source_run["measure"])
        result = finetune(model, source_run["task"], ft_config(strategy=strategy, lr=lr, steps=40, batch_size=8,
                                                               warmup_steps=2, eval_every=40, lora_rank=4,
                                                               lora_targets=("c_attn", "mlp.c_fc")),
                          progress=False, log=quiet)
        amount[name] = fg.forgetting(before, fg.source_loss(result.model, source_run["measure"]))
        assert result.before["test"]["loss"] - result.after["test"]["loss"] > 0, name  # every run learned
    # Checked over fine-tuning seeds 0-2 and pretraining seeds 0-1: full high 0.08-0.14, LoRA 0.005-0.03,
    # full low 0.003-0.013 nats/token; the margins below are about half the smallest gap seen.
    assert amount["full high"] > 0.05
    assert amount["full high"] > amount["lora high"] + 0.03
    assert amount["full high"] > amount["full low"] + 0.03


def _per_row_losses(model, x, y):
    """Each row's mean next-token loss over its counted targets (y >= 0), by hand in NumPy (float64)."""
    logits = np.asarray(model(x)[0].data, dtype=np.float64)  # (B, T, V)
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    rows = []
    for b in range(len(x)):
        counted = np.nonzero(y[b] >= 0)[0]
        rows.append(-np.mean([logp[b, t, y[b, t]] for t in counted]))
    return np.array(rows)


def test_replay_with_a_prompt_task_weighs_task_and_source_by_rows_not_by_tokens():
    model = tiny_float64_gpt(vocab=7)
    source = np.random.default_rng(1).integers(0, 7, size=500)
    B, T = 8, 6
    x = np.random.default_rng(2).integers(0, 7, size=(B, T))
    y = np.full((B, T), -1)
    y[:, -1] = np.random.default_rng(3).integers(0, 7, size=B)  # one counted target per row: a class label
    replay = fg.Replay(source, 0.25)  # round(0.25 * 8) = 2 source rows
    mx, my = replay.mix_batch(x, y, np.random.default_rng(0))
    assert mx.shape == (6, T) and (mx == x[:6]).all() and (my == y[:6]).all()
    objective = model(mx, my)[1].item() + replay.penalty(model).item()
    # the oracle: the same two source windows (the same rng, nothing drawn in mix_batch), each row's own mean
    # loss, averaged over the 8 rows, then scaled by B / (B - n) as the docstring says
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(source) - T, size=2)
    sx = np.stack([source[s:s + T] for s in starts])
    sy = np.stack([source[s + 1:s + T + 1] for s in starts])
    per_row = np.concatenate([_per_row_losses(model, x[:6], y[:6]), _per_row_losses(model, sx, sy)])
    assert objective == pytest.approx(8 / 6 * per_row.mean(), rel=1e-9)
    assert replay.penalty(model) is None  # used once per step
    with pytest.raises(ValueError, match="prompt task"):
        fg.Replay(source, 1.0).mix_batch(x, y, np.random.default_rng(0))


def test_replay_with_a_new_classifier_head_trains_and_records_the_source_term(source_run):
    from tinyft.tasks import build_task

    task = build_task("order", source_run["tokenizer"], n_examples=16, seed=0, block_size=32)
    task.val, task.test, task.shifted = task.val[:8], task.test[:8], task.shifted[:8]
    model = checkpoint.load_model(source_run["path"])
    result = finetune(model, task, ft_config(steps=3, classifier="head", task="order"),
                      mitigations=[fg.Replay(source_run["source_train"], 0.25)], progress=False, log=quiet)
    assert all(row["penalty"] > 0 for row in result.history)  # the source's loss, weighed in every step
