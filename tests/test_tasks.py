"""Tests of tinyft/tasks.py: the specialized datasets (code, kind, describe), their batches and scorers."""

import warnings

import numpy as np
import pytest

from tinyft import Tensor, data, nn, tasks
from tinyft.tokenizers import CharTokenizer

BLOCK = 128


@pytest.fixture(scope="module")
def tok():
    return CharTokenizer.build([data.broad_corpus(), data.domain_corpus("stdlib_code")])


def build(name, tok, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # describe caps n_examples at its ~100 train pairs
        return tasks.build_task(name, tok, **kw)


@pytest.fixture(scope="module")
def kind(tok):
    return build("kind", tok, n_examples=400)


@pytest.fixture(scope="module")
def describe(tok):
    return build("describe", tok)


@pytest.fixture(scope="module")
def code(tok):
    return build("code", tok, n_examples=200)


def texts(split):
    return [(e.prompt, e.answer, e.label) for e in split]


def test_the_same_seed_builds_the_same_task_and_another_seed_a_different_one(tok, kind, describe, code):
    again = build("kind", tok, n_examples=400)
    assert all(texts(getattr(kind, s)) == texts(getattr(again, s)) for s in tasks.SPLITS)
    assert texts(build("kind", tok, n_examples=400, seed=1).train) != texts(kind.train)
    assert texts(build("describe", tok).test) == texts(describe.test)
    assert texts(build("describe", tok, seed=1).test) != texts(describe.test)
    again = build("code", tok, n_examples=200)
    assert all(np.array_equal(getattr(code, s), getattr(again, s)) for s in tasks.SPLITS)
    x1, y1 = code.batch("train", 4, np.random.default_rng(5))
    x2, y2 = code.batch("train", 4, np.random.default_rng(5))
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


def test_the_task_name_and_its_type_are_two_attributes(kind, describe, code):
    assert [(t.name, t.task_type) for t in (code, kind, describe)] == [
        ("code", "lm"), ("kind", "classification"), ("describe", "instruction")]
    assert kind.info()["task_type"] == "classification" and "task_type='classification'" in repr(kind)


def test_no_val_test_or_shifted_text_appears_in_train(kind, describe):
    train = {e.text for e in kind.train}
    for split in ("val", "test", "shifted"):
        assert not train & {e.text for e in getattr(kind, split)}
    assert not {e.group for e in kind.train} & {e.group for e in kind.shifted}  # shifted: unseen sources
    train_answers = {e.answer for e in describe.train}
    for split in ("val", "test", "shifted"):
        examples = getattr(describe, split)
        assert not train_answers & {e.answer for e in examples}  # an exact match is never a copied answer
        assert not {e.text for e in describe.train} & {e.text for e in examples}
    assert {e.group for e in describe.shifted} == set(tasks.DESCRIBE_SHIFTED_MODULES)
    assert not {e.group for e in describe.train} & set(tasks.DESCRIBE_SHIFTED_MODULES)


def test_code_splits_are_disjoint_chunks_of_the_corpus(tok, code):
    ids = tok.encode(data.domain_corpus("stdlib_code"))
    info = code.info()
    assert info["tokens"]["train_available"] + len(code.val) + len(code.test) == len(ids)
    assert len(code.train) == 200 * BLOCK + 1  # n_examples windows of block_size tokens (+1 for the last target)
    assert len(code.test) % tasks.CODE_CHUNK == 0
    chunks = {tuple(code.test[i:i + tasks.CODE_CHUNK]) for i in range(0, len(code.test), tasks.CODE_CHUNK)}
    assert len(chunks) == len(code.test) // tasks.CODE_CHUNK  # whole chunks, each once
    assert np.array_equal(code.shifted, tok.encode(data.domain_corpus("stdlib_code_shifted")))


def test_lm_batch_targets_are_the_inputs_shifted_by_one(code):
    x, y = code.batch("train", 6, np.random.default_rng(0))
    assert x.shape == y.shape == (6, BLOCK) and x.dtype == y.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])
    x, y = code.eval_arrays("test")
    assert x.shape == (code.info()["windows"]["test"], BLOCK) and np.array_equal(x[:, 1:], y[:, :-1])


def test_instruction_batch_counts_only_the_answer_tokens(tok, describe):
    x, y = describe.batch("train", 16, np.random.default_rng(0))
    assert x.shape == y.shape and x.dtype == y.dtype == np.int64 and x.shape[1] <= BLOCK
    answers = {e.answer + "\n" for e in describe.train}
    prompts = {e.prompt for e in describe.train}
    for xr, yr in zip(x, y):
        counted = np.nonzero(yr >= 0)[0]
        assert np.array_equal(counted, np.arange(counted[0], counted[-1] + 1))  # one run, the answer
        assert tok.decode(yr[counted]) in answers
        assert tok.decode(xr[:counted[0] + 1]) in prompts  # everything before the answer is the prompt
        assert np.all(xr[counted[-1] + 1:] == describe.pad_id)  # then padding with target -1


def test_classification_batch_has_one_counted_position_holding_the_label_token(kind):
    x, y = kind.batch("train", 32, np.random.default_rng(0))
    assert x.shape == y.shape and x.shape[1] <= BLOCK and x.dtype == y.dtype == np.int64
    assert np.all((y >= 0).sum(axis=1) == 1)
    assert set(y[y >= 0].tolist()) <= set(kind.label_ids.tolist())
    prompts, labels = kind.examples("test")
    assert len(prompts) == len(labels) == 400 and all(len(p) <= BLOCK - 1 for p in prompts)
    assert np.bincount(labels).tolist() == [tasks.KIND_TEST_PER_CLASS] * 4


def test_label_noise_flips_the_stated_fraction_of_train_labels_and_never_touches_val_or_test(tok, kind):
    noisy = build("kind", tok, n_examples=400, label_noise=0.3)
    assert [e.text for e in noisy.train] == [e.text for e in kind.train]
    flipped = np.array([e.label for e in noisy.train]) != np.array([e.label for e in kind.train])
    assert flipped.sum() == round(0.3 * 400) == noisy.info()["n_flipped"]
    assert np.array_equal(noisy.train_clean_labels, [e.label for e in kind.train])
    for split in ("val", "test", "shifted"):
        assert texts(getattr(noisy, split)) == texts(getattr(kind, split))
    assert all(e.answer == tasks.KIND_CLASSES[e.label] for e in noisy.train)


def test_imbalance_sets_the_majority_to_minority_ratio_of_train_and_leaves_eval_balanced(tok):
    task = build("kind", tok, n_examples=600, imbalance=10.0)
    counts = np.bincount([e.label for e in task.train], minlength=4)
    assert counts.sum() == 600 and counts[0] == counts.max()
    assert counts[0] / counts[-1] == pytest.approx(10.0, rel=0.05)
    assert np.all(np.diff(counts) < 0)
    assert np.bincount([e.label for e in task.test]).tolist() == [tasks.KIND_TEST_PER_CLASS] * 4


def test_held_out_answers_do_not_appear_in_the_broad_corpus(describe):
    broad = data.broad_corpus()
    for split in tasks.SPLITS:
        assert not any(e.answer in broad for e in getattr(describe, split))
    info = describe.info()
    assert info["leakage_fraction"] == info["pairs_leaked_removed"] / info["pairs_total"]


def test_few_shot_rows_fit_block_size_and_hold_demonstrations(tok, kind, describe):
    for task, marker in ((kind, "\nkind: "), (describe, "\nA: ")):
        x, y = task.eval_arrays("test", shots=3)
        x0, _ = task.eval_arrays("test")
        assert x.shape[0] == x0.shape[0] and x.shape[1] <= BLOCK
        assert np.array_equal(y[y >= 0], (lambda z: z[z >= 0])(task.eval_arrays("test")[1]))
        first = tok.decode(x[0][: np.argmax(y[0] >= 0) + 1])
        assert first.count(marker) >= 2  # a demonstration, then the question itself
    prefix = describe.few_shot_prompt(2, np.random.default_rng(0))
    assert prefix.count("Q: ") == 2 and prefix.endswith("\n\n")


class OracleModel:
    """Knows every evaluation row: puts all probability on the reference next token."""

    def __init__(self, task, split, vocab_size):
        self.training, self.V, self.next = False, vocab_size, {}
        x, y = task.eval_arrays(split)
        for xr, yr in zip(x, y):
            for t in np.nonzero(yr >= 0)[0]:
                self.next[tuple(xr[:t + 1])] = yr[t]

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def __call__(self, idx):
        logits = np.zeros(idx.shape + (self.V,))
        for b in range(idx.shape[0]):
            for t in range(idx.shape[1]):
                target = self.next.get(tuple(idx[b, :t + 1]))
                if target is not None:
                    logits[b, t, target] = 50.0
        return Tensor(logits), None


def test_an_oracle_model_gets_perfect_scores(tok, kind, describe):
    result = describe.evaluate(OracleModel(describe, "test", tok.vocab_size), "test")
    assert result["exact_match"] == 1.0 and result["answer_loss"] < 1e-6
    result = kind.evaluate(OracleModel(kind, "val", tok.vocab_size), "val")
    assert result["accuracy"] == 1.0 and result["loss"] < 1e-6


def test_evaluate_on_a_tiny_random_gpt_returns_metrics_in_range(tok, kind, describe, code):
    model = nn.GPT(nn.GPTConfig(vocab_size=tok.vocab_size, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16))
    model.train()
    chance = np.log(tok.vocab_size)
    result = code.evaluate(model, "val", max_examples=8)
    assert result["n"] == 8 and abs(result["loss"] - chance) < 0.5
    result = kind.evaluate(model, "test", max_examples=40)
    assert 0.0 <= result["accuracy"] <= 1.0 and abs(result["loss"] - chance) < 0.5
    result = describe.evaluate(model, "shifted", max_examples=6)
    assert 0.0 <= result["exact_match"] <= 1.0 and abs(result["answer_loss"] - chance) < 0.5
    assert model.training  # evaluate restores the mode it found


def test_too_many_examples_are_capped_with_a_warning(tok):
    with pytest.warns(UserWarning, match="n_examples=5000"):
        task = tasks.build_task("describe", tok, n_examples=5000)
    assert len(task.train) == task.info()["max_n_examples"] < 5000


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "poetry"}, "name: unknown task 'poetry'; valid tasks are code, kind, describe"),
    ({"n_examples": 0}, "n_examples"),
    ({"label_noise": 1.0}, "label_noise"),
    ({"label_noise": -0.1}, "label_noise"),
    ({"imbalance": 0.5}, "imbalance"),
    ({"block_size": 8}, "block_size"),
    ({"name": "code", "label_noise": 0.1}, "label_noise and imbalance apply"),
])
def test_bad_arguments_raise_value_errors_naming_the_argument(tok, kwargs, match):
    kwargs = {"name": "kind", "tokenizer": tok, **kwargs}
    with pytest.raises(ValueError, match=match):
        tasks.build_task(**kwargs)


def test_a_tokenizer_that_cannot_encode_the_task_is_refused():
    small = CharTokenizer.build("the quick brown fox jumps over a lazy dog\n:")
    for name in tasks.TASKS:
        with pytest.raises(ValueError, match="vocabulary does not fit this task"):
            tasks.build_task(name, small, n_examples=50)
