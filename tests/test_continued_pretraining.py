"""Continued (domain-adaptive) pretraining and the vocabulary (tinyft/pretrain.py: init_from, vocab_extra,
sample_prompt): a continued run starts from the checkpoint's weights, with a fresh optimizer and schedule,
keeps its architecture and tokenizer (widened on request), refuses what it cannot do, and resumes exactly.
"""

import os
import random

import numpy as np
import pytest

from tinyft import checkpoint
from tinyft.autograd import manual_seed
from tinyft.nn import GPT, GPTConfig
from tinyft.pretrain import PretrainConfig, StopAfter, pretrain

SHAPE = dict(n_layer=1, n_head=2, n_embd=16, block_size=16)
RUN = dict(batch_size=4, lr=1e-2, min_lr=1e-3, warmup_steps=1, eval_batches=1, checkpoint_every=1000,
           sample_tokens=5)


def quiet(*args, **kwargs):
    pass


def sql_text(n, seed):
    rng = random.Random(seed)
    return "".join(f"SELECT {rng.choice(['id', 'name', 'qty'])} FROM {rng.choice(['users', 'items'])} "
                   f"WHERE id > {rng.randint(1, 99)};\n" for _ in range(n))


def chess_text(n, seed):
    rng = random.Random(seed)
    return "".join(" ".join(f"{rng.choice('♔♕♖♗♘♙')}{rng.choice('abcdefgh')}{rng.randint(1, 8)}" for _ in range(6))
                   + "\n" for _ in range(n))


def run(out, steps, **fields):
    return pretrain(PretrainConfig(**{**RUN, "steps": steps, "eval_every": steps, "out": str(out), **fields}),
                    progress=False, log=quiet)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpora")
    paths = {}
    for name, text in (("prose", sql_text(400, 0).lower()), ("sql", sql_text(400, 1)), ("chess", chess_text(300, 2))):
        paths[name] = str(folder / f"{name}.txt")
        with open(paths[name], "w", encoding="utf-8") as f:
            f.write(text)
    return paths


@pytest.fixture(scope="module")
def base(corpora, tmp_path_factory):
    """A 1-layer GPT pretrained 20 steps on lower-case text: the checkpoint every continued run starts from."""
    result = run(tmp_path_factory.mktemp("base"), 20, corpus=corpora["prose"], **SHAPE)
    return result.checkpoint


def max_difference(state, reference):
    return max(float(np.abs(np.asarray(state[k], np.float64) - np.asarray(reference[k], np.float64)).max())
               for k in reference)


def test_init_from_starts_from_the_checkpoints_weights_with_a_fresh_optimizer(base, corpora, tmp_path):
    saved = checkpoint.load(base)
    # one step at lr 1e-8 moves no weight by more than ~1e-8: what the model holds after it is where it started
    result = run(tmp_path / "continued", 1, corpus=corpora["sql"], init_from=base, lr=1e-8, min_lr=0.0,
                 warmup_steps=0)
    assert result.model.config.n_layer == 1 and result.model.config.n_embd == 16  # the checkpoint's, not 4 and 128
    assert max_difference(result.model.state_dict(), saved.model_state) < 1e-6
    assert result.tokenizer.to_dict() == saved.meta["tokenizer"]
    fresh = run(tmp_path / "fresh", 1, corpus=corpora["sql"], lr=1e-8, min_lr=0.0, warmup_steps=0, **SHAPE)
    assert max_difference(fresh.model.state_dict(), saved.model_state) > 1e-3  # random weights are far away
    continued = checkpoint.load(result.checkpoint)
    assert continued.meta["step"] == 1 and len(continued.meta["history"]) == 1  # a fresh schedule
    steps = {int(entry["step"]) for entry in continued.optimizer_state["state"].values()}
    assert steps == {1}  # fresh AdamW moments: one step, not 20 + 1
    assert continued.meta["pretrain_config"]["init_from"] == base


def test_a_continued_run_resumes_bit_identically(base, corpora, tmp_path):
    whole = run(tmp_path / "whole", 4, corpus=corpora["sql"], init_from=base)
    config = PretrainConfig(**{**RUN, "steps": 4, "eval_every": 4, "out": str(tmp_path / "parts"),
                               "corpus": corpora["sql"], "init_from": base})
    first = pretrain(config, progress=False, log=quiet, callbacks=[StopAfter(2)])
    assert first.interrupted and first.steps == 2
    second = pretrain(config, resume=True, progress=False, log=quiet)
    assert second.steps == 4
    for name, array in whole.model.state_dict().items():
        assert np.array_equal(array, second.model.state_dict()[name]), name


def test_the_checkpoints_architecture_wins_and_a_conflict_is_refused(base, corpora, tmp_path):
    with pytest.raises(ValueError, match=r"checkpoint has n_layer=1, but this run asks for n_layer=3.*--n-layer"):
        run(tmp_path / "x", 1, corpus=corpora["sql"], init_from=base, n_layer=3)
    with pytest.raises(ValueError, match=r"gelu='tanh', but this run asks for gelu='exact'"):
        run(tmp_path / "x", 1, corpus=corpora["sql"], init_from=base, gelu="exact")
    assert not os.path.exists(tmp_path / "x" / "ckpt.npz")


def test_init_from_never_writes_over_its_input_and_needs_a_tokenizer(base, corpora, tmp_path):
    before = open(base, "rb").read()
    with pytest.raises(ValueError, match="never writes over its input"):
        run(os.path.dirname(base), 1, corpus=corpora["sql"], init_from=base)
    assert open(base, "rb").read() == before
    manual_seed(0)
    checkpoint.save(tmp_path / "bare.npz", GPT(GPTConfig(vocab_size=20, **SHAPE)))
    with pytest.raises(ValueError, match="holds no tokenizer"):
        run(tmp_path / "y", 1, corpus=corpora["sql"], init_from=str(tmp_path / "bare.npz"))
    with pytest.raises(ValueError, match="init_from: no file or folder"):
        run(tmp_path / "y", 1, init_from=str(tmp_path / "missing.npz"))


def test_vocab_extra_adds_its_characters_to_a_new_vocabulary(corpora, tmp_path):
    pieces = set("♔♕♖♗♘♙")
    plain = run(tmp_path / "plain", 1, corpus=corpora["prose"], **SHAPE)
    wide = run(tmp_path / "wide", 1, corpus=corpora["prose"], vocab_extra=corpora["chess"], **SHAPE)
    assert not pieces & set(plain.tokenizer.chars)
    assert pieces <= set(wide.tokenizer.chars)
    assert set(wide.tokenizer.chars) == set(plain.tokenizer.chars) | set(chess_text(300, 2))
    assert wide.model.config.vocab_size == wide.tokenizer.vocab_size


def test_a_corpus_the_vocabulary_does_not_cover_asks_for_vocab_extra(base, corpora, tmp_path):
    with pytest.raises(ValueError, match=r"corpus .*chess.txt.* not in the checkpoint's vocabulary.*--vocab-extra"):
        run(tmp_path / "c", 1, corpus=corpora["chess"], init_from=base)


def test_vocab_extra_widens_a_checkpoints_vocabulary_keeping_its_ids_and_rows(base, corpora, tmp_path):
    saved = checkpoint.load(base)
    old_chars = saved.meta["tokenizer"]["chars"]
    extra = chess_text(300, 2) + "échec et mat\n"  # é sorts before the vocabulary's last character (Ł)
    (tmp_path / "extra.txt").write_text(extra, encoding="utf-8")
    result = run(tmp_path / "c", 1, corpus=corpora["chess"], init_from=base, vocab_extra=str(tmp_path / "extra.txt"),
                 lr=1e-8, min_lr=0.0, warmup_steps=0)
    new_chars = sorted(set(extra) - set(old_chars))
    assert min(new_chars) < max(old_chars)  # the premise: sorting old and new together would move old ids
    assert result.tokenizer.chars == old_chars + new_chars  # old ids unchanged, the new ones after them
    wte = result.model.transformer.wte.weight.data  # (V_old + new, C)
    old_wte = saved.model_state["transformer.wte.weight"]
    assert wte.shape == (len(old_chars) + 1 + len(new_chars), 16)
    assert np.abs(wte[:len(old_wte)] - old_wte).max() < 1e-6
    assert 0.01 < wte[len(old_wte):].std() < 0.04  # new rows: fresh draws, std 0.02 as every embedding starts
    assert result.model.lm_head.weight is result.model.transformer.wte.weight  # still tied


def test_the_sample_continues_the_sample_prompt_and_an_unknown_one_is_refused_first(base, corpora, tmp_path):
    result = run(tmp_path / "s", 2, corpus=corpora["sql"], sample_prompt="SELECT name", **SHAPE)
    assert result.sample.startswith("SELECT name") and len(result.sample) == len("SELECT name") + 5
    with pytest.raises(ValueError, match="sample_prompt '♘' holds characters the vocabulary does not know"):
        run(tmp_path / "u", 2, corpus=corpora["sql"], sample_prompt="♘", **SHAPE)
    assert not os.path.exists(tmp_path / "u" / "ckpt.npz")  # refused before any training
    with pytest.raises(ValueError, match="sample_prompt must be a non-empty string"):
        PretrainConfig(sample_prompt="").validate()
