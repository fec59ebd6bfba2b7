"""The "order" task: a real passage or the same words shuffled. Its promises are checked from the outside:
the classes hold the same characters (so a bag of characters is at chance by construction), twins never
cross splits, the classes are balanced, noise and imbalance do what they say, and the passages lie outside
the text a character-level pretraining with seed 0 trains on."""

import collections
import re

import numpy as np
import pytest

from tinyft import data, passages, tasks
from tinyft.pretrain import PretrainConfig, prepare_data
from tinyft.tokenizers import CharTokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.build([data.broad_corpus(), data.domain_corpus("stdlib_code")])


@pytest.fixture(scope="module")
def task(tokenizer):
    return tasks.build_task("order", tokenizer, n_examples=600, seed=3)


def _words(text):
    return tuple(sorted(text.split(" ")))


def test_order_task_is_deterministic(tokenizer, task):
    again = tasks.build_task("order", tokenizer, n_examples=600, seed=3)
    for split in tasks.SPLITS:
        assert [(e.prompt, e.label) for e in getattr(task, split)] == \
               [(e.prompt, e.label) for e in getattr(again, split)]
    other = tasks.build_task("order", tokenizer, n_examples=600, seed=4)
    assert [e.prompt for e in other.test] != [e.prompt for e in task.test]


def test_twins_hold_the_same_characters_and_differ_in_order(task):
    for split in tasks.SPLITS:
        by_words = collections.defaultdict(dict)
        for e in getattr(task, split):
            by_words[_words(e.text)][e.label] = e.text
        pairs = [v for v in by_words.values() if len(v) == 2]
        assert len(pairs) == len(getattr(task, split)) // 2  # every example has its twin in the same split
        for twins in pairs:
            real, shuffled = twins[0], twins[1]
            assert real != shuffled
            assert collections.Counter(real) == collections.Counter(shuffled)
        # so over a whole split the two classes' character multisets are identical
        counts = [collections.Counter(), collections.Counter()]
        for e in getattr(task, split):
            counts[e.label].update(e.text)
        assert counts[0] == counts[1]


def test_no_passage_crosses_splits(task):
    seen = {split: {_words(e.text) for e in getattr(task, split)} for split in tasks.SPLITS}
    for a in tasks.SPLITS:
        for b in tasks.SPLITS:
            if a < b:
                assert not seen[a] & seen[b], f"a passage is in both {a} and {b}"


def test_classes_are_balanced_and_passages_fit_the_block(task):
    for split in tasks.SPLITS:
        labels = np.array([e.label for e in getattr(task, split)])
        assert (labels == 0).sum() == (labels == 1).sum()
    assert task.info()["whole_passage_in_view"]
    for e in task.test:
        assert 60 <= len(e.text) <= 100 and len(e.text.split(" ")) >= 8


def test_bag_of_characters_is_exactly_at_chance(task):
    from tinyft.baselines import bag_of_chars_baseline

    result = bag_of_chars_baseline(task)
    # equal features for twins -> equal predictions for twins -> one right, one wrong in every pair
    assert result["bag_of_chars"]["test"] == 0.5
    assert result["majority"]["test"] == 0.5


def test_label_noise_and_imbalance(tokenizer):
    noisy = tasks.build_task("order", tokenizer, n_examples=400, seed=0, label_noise=0.25)
    flipped = sum(e.label != c for e, c in zip(noisy.train, noisy.train_clean_labels))
    assert flipped == 100
    for e in noisy.train:
        assert e.answer == tasks.ORDER_CLASSES[e.label]
    skewed = tasks.build_task("order", tokenizer, n_examples=400, seed=0, imbalance=3.0)
    assert np.bincount([e.label for e in skewed.train]).tolist() == [300, 100]
    assert all(np.bincount([e.label for e in skewed.test]) == 200)  # evaluation stays balanced


def test_passages_are_outside_the_pretraining_text(tokenizer, task):
    # the training text of a character-level pretraining with seed 0, from the pretraining pipeline itself
    prepared = prepare_data(PretrainConfig(seed=tasks.ORDER_PRETRAIN_SEED), tokenizer)
    train_text = tokenizer.decode(prepared["train"])
    leakage = tasks.order_leakage(task, train_text)
    assert leakage["test"] == 0.0 and leakage["val"] == 0.0 and leakage["train"] == 0.0
    # and the check can fail: the validation text does hold them (for the broad-corpus passages)
    val_text = re.sub(r"\s+", " ", tokenizer.decode(prepared["val"]))
    from_broad = [e.text for e in task.test if e.label == 0 and e.group.startswith("broad@")]
    assert from_broad and all(p in val_text for p in from_broad)


def test_shuffle_words_refuses_a_passage_with_one_distinct_word():
    with pytest.raises(ValueError, match="passage"):
        passages.shuffle_words("the the the", np.random.default_rng(0))
