"""Prompting with contextual calibration and zero-shot scoring (baselines.py section 2), checked against
computations written here: one prompt at a time through the model's own loss, a constant logit bias that
calibration must cancel exactly, and a threshold found by hand on planted scores."""

import numpy as np
import pytest

import tinyft
from tinyft import baselines, data, tasks
from tinyft.nn import GPT, GPTConfig, Module
from tinyft.tokenizers import CharTokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.build([data.broad_corpus(), data.domain_corpus("stdlib_code")])


@pytest.fixture(scope="module")
def model(tokenizer):
    tinyft.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=32))


@pytest.fixture(scope="module")
def order_task(tokenizer):
    task = tasks.build_task("order", tokenizer, n_examples=60, seed=0)
    for split in ("val", "test", "shifted"):  # 12 passages each, both twins kept
        keep = sorted({tuple(sorted(e.text.split(" "))) for e in getattr(task, split)})[:12]
        setattr(task, split, [e for e in getattr(task, split) if tuple(sorted(e.text.split(" "))) in keep])
    return task


def _softmax_over(logits_row, ids):
    z = logits_row[ids] - logits_row[ids].max()
    return np.exp(z) / np.exp(z).sum()


def test_label_probabilities_match_one_prompt_at_a_time(model, tokenizer, order_task):
    prompts = [e.prompt for e in order_task.test[:5]] + ["short\norder: "]
    p = baselines.label_probabilities(model, tokenizer, prompts, order_task.label_ids, batch_size=4)
    model.eval()
    for row, prompt in enumerate(prompts):
        ids = tokenizer.encode(prompt)[None, :]  # (1, T): no padding at all
        logits, _ = model(ids)
        expected = _softmax_over(np.asarray(logits.data, dtype=np.float64)[0, -1], order_task.label_ids)
        np.testing.assert_allclose(p[row], expected, rtol=1e-5, atol=1e-7)


def test_text_losses_match_the_models_own_cross_entropy(model, tokenizer):
    texts = ["The quick brown fox jumps over the lazy dog.", "a b c", "Return the sum of the values."]
    losses = baselines.text_losses(model, tokenizer, texts, batch_size=2)
    model.eval()
    for text, got in zip(texts, losses):
        ids = tokenizer.encode(text)
        _, loss = model(ids[None, :-1], ids[None, 1:])  # the GPT's mean cross-entropy on this text alone
        assert got == pytest.approx(loss.item(), rel=1e-5)


class LabelBias(Module):
    """A GPT whose logits get +bias on one label token: a model that simply prefers that label."""

    def __init__(self, gpt, token, bias):
        super().__init__()
        self.gpt, self.token, self.bias = gpt, token, bias

    def forward(self, idx, targets=None):
        logits, _ = self.gpt(idx)
        shift = np.zeros(logits.shape[-1], dtype=logits.dtype)
        shift[self.token] = self.bias
        return logits + shift, None


def test_calibration_cancels_a_constant_preference_for_one_label(model, order_task, monkeypatch):
    monkeypatch.setattr(baselines, "gpt_of", lambda m: m.gpt if isinstance(m, LabelBias) else m)
    plain = baselines.calibrated_prompting(model, order_task, "test", shots=1, seed=0)
    biased_model = LabelBias(model, int(order_task.label_ids[0]), 8.0)
    biased = baselines.calibrated_prompting(biased_model, order_task, "test", shots=1, seed=0)
    assert biased["accuracy"] == pytest.approx(0.5)  # the raw answer is always "real": half right
    assert set(biased["predictions"]) == {0}
    assert biased["calibrated_predictions"] == plain["calibrated_predictions"]  # the bias divides out exactly
    assert len(set(plain["calibrated_predictions"])) == 2  # (and the check is not trivially one class)
    assert plain["shots_fitted"] == 1.0  # block 256 holds one ~110-character demonstration whole


def test_demonstrations_are_dropped_whole_never_cut(tokenizer, order_task):
    rng = np.random.default_rng(0)
    text, k = baselines._demonstrations(order_task, 3, rng, room=150, tokenizer=tokenizer)
    assert k == 1  # three ~110-character demonstrations do not fit 150 tokens; one does
    assert text.endswith("\n\n") and text.split("\n")[1].startswith("order: ")
    assert any(text.startswith(e.prompt) for e in order_task.train)


def test_zero_shot_order_chooses_its_threshold_on_validation_only(order_task, monkeypatch):
    rng = np.random.default_rng(1)
    planted = {}
    for split in ("val", "test", "shifted"):
        for e in getattr(order_task, split):
            planted[e.text] = (1.0 if e.label == 0 else 1.5) + rng.normal(0, 0.3)
    monkeypatch.setattr(baselines, "text_losses", lambda m, tok, texts: np.array([planted[t] for t in texts]))
    result = baselines.zero_shot_order(None, order_task)

    def accuracy(split, threshold):
        return np.mean([(planted[e.text] >= threshold) == (e.label == 1) for e in getattr(order_task, split)])

    val_scores = sorted(planted[e.text] for e in order_task.val)
    mids = [(a + b) / 2 for a, b in zip(val_scores[:-1], val_scores[1:])]
    best_val = max(accuracy("val", t) for t in mids)
    assert result["val"] == pytest.approx(best_val)
    assert result["test"] == pytest.approx(accuracy("test", result["threshold"]))
    # pairwise: real twin below its shuffled twin, counted by hand
    pairs = {}
    for e in order_task.test:
        pairs.setdefault(tuple(sorted(e.text.split(" "))), {})[e.label] = planted[e.text]
    assert result["pairwise_test"] == pytest.approx(np.mean([v[0] < v[1] for v in pairs.values()]))
    # the test split's scores cannot move the threshold
    for e in order_task.test:
        planted[e.text] = -planted[e.text]
    assert baselines.zero_shot_order(None, order_task)["threshold"] == result["threshold"]
