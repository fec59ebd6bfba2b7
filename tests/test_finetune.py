"""Fine-tuning: each strategy trains exactly what it says, LoRA checkpoints and LP-FT keep their promises,
the hooks are called, and bad input fails clearly. (LoRA's math: test_lora.py; baselines and cost:
test_baselines.py; WiSE-FT: test_forgetting.py.)"""

import numpy as np
import pytest

from conftest import CodeWindows, one_blas_thread, quiet

from tinyft import checkpoint, optim, tasks
from tinyft.autograd import manual_seed
from tinyft.finetune import (
    STRATEGIES,
    FinetuneConfig,
    Hook,
    apply_strategy,
    describe_trainable,
    finetune,
    learning_rates,
    load_finetuned,
    param_groups,
    save_finetuned,
)
from tinyft.lora import LoRALinear, inject_lora, lora_state_dict
from tinyft.nn import GPT, GPTConfig
from tinyft.tokenizers import CharTokenizer

BLOCK = 32


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread_here():
    with one_blas_thread():
        yield


def tiny_gpt(vocab=20, n_layer=2, seed=0):
    manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=n_layer, n_head=2, n_embd=16))


def ft_config(**overrides):
    settings = dict(steps=4, batch_size=4, warmup_steps=1, eval_every=2, lr=3e-3, lp_steps=3, out=None, seed=0)
    settings.update(overrides)
    return FinetuneConfig(**settings)


# --- which parameters train ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_frozen_parameters_are_bit_identical_after_finetuning_and_hold_no_optimizer_state(strategy, pretrained, task):
    model = checkpoint.load_model(pretrained[0])
    before = model.state_dict()
    result = finetune(model, task, ft_config(strategy=strategy), progress=False, log=quiet)
    model = result.model
    named = dict(model.named_parameters())
    in_optimizer = {id(p) for g in result.optimizer.param_groups for p in g["params"]}
    for name, p in named.items():
        if p.requires_grad:
            assert id(p) in in_optimizer, name
        else:
            assert id(p) not in in_optimizer, f"frozen {name} entered the optimizer"
            np.testing.assert_array_equal(p.data, before[name], err_msg=f"frozen {name} changed")
    assert len(result.optimizer.state) <= len(in_optimizer)
    assert all(named[n].requires_grad for n in result.report.trainable_names if n in named)
    changed = [n for n, p in named.items() if p.requires_grad and not np.array_equal(p.data, before.get(n, 0.0))]
    assert changed, "nothing trained"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradients_reach_exactly_the_trainable_set_of_each_strategy(strategy):
    model = tiny_gpt()
    report = apply_strategy(model, strategy, k=1, lora_rank=2, lora_targets=("c_attn", "mlp.c_fc"))
    x = np.random.default_rng(0).integers(0, 20, size=(2, 8))
    _, loss = model(x, np.roll(x, -1, axis=1))
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable == set(report.trainable_names)
    assert report.trainable_params == sum(p.size for p in model.parameters() if p.requires_grad)


def test_strategy_trainable_sets_are_the_documented_ones():
    names = lambda s, **kw: set(apply_strategy(tiny_gpt(), s, **kw).trainable_names)  # noqa: E731
    assert names("head") == {"lm_head.weight"}
    assert names("bitfit") == {n for n in names("full") if n.endswith(".bias")}
    assert names("layernorm") == {n for n in names("full") if ".ln_" in "." + n}
    last = {n for n in names("full") if n.startswith(("transformer.h.1.", "transformer.ln_f"))}
    assert names("last_k", k=1) == last | {"lm_head.weight"}
    assert "transformer.wte.weight" not in names("embeddings_frozen") and "lm_head.weight" in names("embeddings_frozen")
    assert names("lora", lora_rank=2) == {f"transformer.h.{i}.attn.c_attn.lora_{m}" for i in range(2) for m in "AB"}


def test_head_strategy_unties_lm_head_without_changing_the_function():
    model = tiny_gpt()
    x = np.random.default_rng(0).integers(0, 20, size=(2, 8))
    logits_before = model(x)[0].data.copy()
    report = apply_strategy(model, "head")
    assert report.head_untied and model.lm_head.weight is not model.transformer.wte.weight
    np.testing.assert_array_equal(model(x)[0].data, logits_before)
    assert report.total_params == tiny_gpt().num_parameters() + 20 * 16  # the head's own copy
    assert "lm_head.weight" in describe_trainable(model)


def test_untied_head_checkpoint_loads_back_with_its_own_head(tmp_path):
    model = tiny_gpt()
    apply_strategy(model, "head")
    model.lm_head.weight.data += 0.5  # the head now differs from the embeddings
    save_finetuned(tmp_path / "ft.npz", model)
    assert checkpoint.load(tmp_path / "ft.npz").meta["stage"] == "finetune"
    loaded = load_finetuned(tmp_path / "ft.npz")
    x = np.arange(8)[None, :]
    np.testing.assert_array_equal(loaded(x)[0].data, model(x)[0].data)
    assert loaded.lm_head.weight is not loaded.transformer.wte.weight


# --- LoRA checkpoints (the adapter itself: tests/test_lora.py) ------------------------------------------


def test_lora_adapter_checkpoint_holds_only_the_adapters_and_loads_back(tmp_path, pretrained):
    base = checkpoint.load_model(pretrained[0])
    apply_strategy(base, "lora", lora_rank=2, lora_targets=("c_attn",))
    for name, layer in base.named_modules():
        if isinstance(layer, LoRALinear):
            layer.lora_B.data[...] = 0.05
    save_finetuned(tmp_path / "adapter.npz", base, export="adapter", base_checkpoint=pretrained[0])
    stored = checkpoint.load(tmp_path / "adapter.npz").model_state
    assert set(stored) == set(lora_state_dict(base))
    x = np.arange(10)[None, :]
    np.testing.assert_array_equal(load_finetuned(tmp_path / "adapter.npz")(x)[0].data, base(x)[0].data)
    save_finetuned(tmp_path / "merged.npz", base, export="merged")
    np.testing.assert_allclose(checkpoint.load_model(tmp_path / "merged.npz")(x)[0].data, base(x)[0].data,
                               rtol=1e-4, atol=1e-5)


# --- LP-FT, learning rates ---------------------------------------------------------------------------


def test_lp_ft_second_phase_starts_from_the_probed_head(pretrained, task):
    probe = finetune(checkpoint.load_model(pretrained[0]), task, ft_config(strategy="head", steps=3),
                     progress=False, log=quiet)
    seen = {}

    def record_head(step, model):
        if step == 4:  # the first step of phase 2
            seen["head"] = model.lm_head.weight.data.copy()
        return {"head_norm": float(np.linalg.norm(model.lm_head.weight.data))}

    pre = checkpoint.load_model(pretrained[0])
    pre_head = pre.lm_head.weight.data.copy()
    result = finetune(pre, task, ft_config(strategy="lp_ft", lp_steps=3, steps=3), callback=record_head,
                      progress=False, log=quiet)
    assert [row["phase"] for row in result.history] == ["probe"] * 3 + ["full"] * 3
    assert "head_norm" in result.history[0]
    np.testing.assert_array_equal(result.probed_head, probe.model.lm_head.weight.data.ravel())  # same probe
    assert not np.array_equal(result.probed_head, pre_head.ravel())
    step_from_probe = np.abs(seen["head"].ravel() - result.probed_head).max()
    assert step_from_probe < np.abs(seen["head"].ravel() - pre_head.ravel()).max()
    assert step_from_probe <= 1.1 * 3e-3 * 1  # one Adam step moves a weight by at most about lr
    assert result.model.num_parameters(trainable_only=True) == result.model.num_parameters()


def test_layer_decay_gives_the_expected_learning_rates():
    model = tiny_gpt(n_layer=3)
    apply_strategy(model, "full")
    opt = optim.AdamW(param_groups(model, lr=1.0, layer_decay=0.5), lr=1.0)
    optim.set_lr(opt, 1e-2)
    lrs = learning_rates(opt)
    assert lrs["transformer.h.2.attn.c_attn.weight"] == pytest.approx(1e-2 * 0.5)  # block i: decay^(n_layer - i)
    assert lrs["transformer.h.0.mlp.c_fc.bias"] == pytest.approx(1e-2 * 0.5 ** 3)
    assert lrs["transformer.wte.weight"] == pytest.approx(1e-2 * 0.5 ** 4)  # embeddings: the lowest
    assert lrs["transformer.ln_f.weight"] == pytest.approx(1e-2)


def test_head_lr_applies_to_the_untied_head_and_frozen_parameters_are_left_out():
    model = tiny_gpt()
    apply_strategy(model, "last_k", k=1)
    lrs = learning_rates(optim.AdamW(param_groups(model, lr=1e-3, head_lr=1e-2), lr=1e-3))
    assert lrs["lm_head.weight"] == pytest.approx(1e-2)
    assert lrs["transformer.h.1.attn.c_attn.weight"] == pytest.approx(1e-3)
    assert not any(name.startswith("transformer.h.0.") for name in lrs)


def test_hooks_are_called_every_step_in_the_documented_order(pretrained, task):
    calls = []

    class Recorder(Hook):
        def mix_batch(self, x, y, rng):
            calls.append("mix_batch")
            return x, y

        def penalty(self, model):
            calls.append("penalty")
            return None if len(calls) % 2 else (model.transformer.ln_f.weight ** 2).sum() * 0.0

        def after_step(self, step, model):
            calls.append("after_step")
            return {"recorded": step}

    result = finetune(checkpoint.load_model(pretrained[0]), task, ft_config(steps=3), mitigations=(Recorder(), Hook()),
                      callback=lambda step, model: {"seen": step}, progress=False, log=quiet)
    assert calls == ["mix_batch", "penalty", "after_step"] * 3  # Hook() does nothing at each point
    assert [row["seen"] for row in result.history] == [1, 2, 3]  # a plain function callback is wrapped
    assert [row["recorded"] for row in result.history] == [1, 2, 3]
    assert all("penalty" in row for row in result.history)


def test_a_mitigation_that_is_not_a_hook_is_refused(pretrained, task):
    class NotAHook:
        def penalty(self, model):
            return None

    with pytest.raises(ValueError, match="mitigations: each must be a finetune.Hook"):
        finetune(checkpoint.load_model(pretrained[0]), task, ft_config(steps=1), mitigations=(NotAHook(),),
                 progress=False, log=quiet)


# --- bad input ----------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(pretrained):
    with pytest.raises(ValueError, match="unknown strategy 'everything'.*full, head"):
        apply_strategy(tiny_gpt(), "everything")
    with pytest.raises(ValueError, match="k must be .* n_layer=2"):
        apply_strategy(tiny_gpt(), "last_k", k=3)
    with pytest.raises(ValueError, match="lora_rank"):
        apply_strategy(tiny_gpt(), "lora", lora_rank=0)
    with pytest.raises(ValueError, match="lora_targets.*c_attn"):
        inject_lora(tiny_gpt(), rank=2, targets=("q_proj",))
    other_vocab = CodeWindows(CharTokenizer.build("abc"), chars=2000)
    with pytest.raises(ValueError, match="vocabulary"):
        finetune(checkpoint.load_model(pretrained[0]), other_vocab, ft_config(), progress=False, log=quiet)


# --- classification with a new head -------------------------------------------------------------------


def test_classifier_head_trains_alone_on_the_kind_task_and_its_checkpoint_loads_back(pretrained, tmp_path):
    kind = tasks.build_task("kind", pretrained[1], n_examples=40, seed=0, block_size=BLOCK)
    config = ft_config(task="kind", strategy="head", classifier="head", steps=3, out=str(tmp_path / "ft"))
    result = finetune(checkpoint.load_model(pretrained[0]), kind, config, progress=False, log=quiet)
    assert result.report.trainable_names == ["head.proj.weight", "head.proj.bias"]
    assert result.metric == "accuracy" and 0.0 <= result.after["test"]["accuracy"] <= 1.0
    x, y = kind.eval_arrays("test", max_examples=8)
    loaded = load_finetuned(result.checkpoint)
    np.testing.assert_array_equal(loaded(x, y)[0].data, result.model(x, y)[0].data)
