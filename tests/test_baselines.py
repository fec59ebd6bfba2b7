"""Baselines and cost (tinyft/baselines.py): fine-tuning a pretrained model beats training from scratch, the
bag-of-characters classifier beats the majority class, and the FLOP count is 6 N per token for full
fine-tuning and less for a head alone."""

import warnings

import pytest
from conftest import one_blas_thread, quiet

from tinyft import checkpoint, data, tasks
from tinyft.autograd import manual_seed
from tinyft.baselines import bag_of_chars_baseline, run_cost, train_from_scratch, visible_texts
from tinyft.finetune import FinetuneConfig, apply_strategy, finetune
from tinyft.nn import GPT, GPTConfig
from tinyft.tokenizers import CharTokenizer


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread_here():
    with one_blas_thread():
        yield


def tiny_gpt(vocab=20, n_layer=2, seed=0):
    manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=n_layer, n_head=2, n_embd=16))


@pytest.fixture(scope="module")
def kind():
    tok = CharTokenizer.build([data.broad_corpus(), data.domain_corpus("stdlib_code")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tasks.build_task("kind", tok, n_examples=400)


def test_finetuning_a_pretrained_model_beats_training_from_scratch_on_held_out_data(pretrained, task):
    # lr 1e-2 is the better of {3e-3, 1e-2} for the model trained from scratch: the comparison favours it
    config = FinetuneConfig(steps=20, batch_size=8, lr=1e-2, warmup_steps=4, eval_every=20, lp_steps=3, out=None,
                            seed=0)
    tuned = finetune(checkpoint.load_model(pretrained[0]), task, config, progress=False, log=quiet)
    scratch = train_from_scratch(checkpoint.load_model(pretrained[0]), task, config, progress=False, log=quiet)
    assert tuned.after["test"]["loss"] < tuned.before["test"]["loss"]
    assert tuned.after["test"]["loss"] < scratch.after["test"]["loss"] - 0.1
    s = tuned.summary()
    assert s["target_after"] < s["target_before"] and s["trainable_params"] == s["total_params"]


def test_bag_of_chars_baseline_beats_the_majority_class(kind):
    result = bag_of_chars_baseline(kind)
    assert result["majority"]["test"] == 0.25
    assert result["bag_of_chars"]["test"] > 0.45 and result["bag_of_chars"]["shifted"] > 0.35


def test_bag_of_chars_sees_only_the_characters_the_network_sees():
    tok = CharTokenizer.build([data.broad_corpus(), data.domain_corpus("stdlib_code")])

    def short_kind(leak):
        """kind at block_size 32: the network reads the last 31 - 7 = 24 passage characters (one token each,
        then "\nkind: " and the answer). With leak, every prose passage gets "####" at its start: invisible."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            task = tasks.build_task("kind", tok, n_examples=200, block_size=32)
        if leak:
            for split in ("train", "val", "test", "shifted"):
                setattr(task, split, [tasks.Example("####" + e.text, "####" + e.prompt, e.answer, e.label, e.group)
                                      if e.label == 0 else e for e in getattr(task, split)])
        return task

    clean, leaky = short_kind(False), short_kind(True)
    assert visible_texts(leaky, "test") == [e.text[-24:] for e in clean.test]  # the same last 24 characters
    assert bag_of_chars_baseline(leaky) == bag_of_chars_baseline(clean)  # so the invisible "####" changes nothing


def test_cost_full_is_six_n_per_token_and_a_head_costs_less():
    model = tiny_gpt()
    apply_strategy(model, "full")
    n = sum(p.size for name, p in model.named_parameters() if p.ndim == 2 and "wpe" not in name)
    full = run_cost(model, tokens=100, wall_s=1.0)
    assert full["flops"] == 6 * n * 100 and full["optimizer_state_bytes"] == 2 * 4 * model.num_parameters()
    head_model = tiny_gpt()
    apply_strategy(head_model, "head")
    head = run_cost(head_model, tokens=100, wall_s=1.0)
    assert head["flops"] == 2 * n * 100 + 4 * 20 * 16 * 100 and head["optimizer_state_bytes"] == 2 * 4 * 20 * 16
