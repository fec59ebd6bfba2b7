"""Shared pytest set-up for tinyft's tests: markers, and the small pretrained models several test files use.

Fixtures (pretraining runs once per session, on one BLAS thread):
  pretrained   (checkpoint path, tokenizer) of a 2-layer, 32-wide GPT pretrained 400 steps (finetune, lora,
               baselines, cli tests)
  task         CodeWindows over that tokenizer: a small language-modelling task of standard-library source
  source_run   a 60-step GPT with its source splits, measuring batches and task (forgetting, experiments, cli)
"""

import contextlib

import numpy as np
import pytest

from tinyft import data

BLOCK = 32


def pytest_configure(config):
    # tests/test_kernels_nojit.py reruns the tests marked nojit with NUMBA_DISABLE_JIT=1 (small shapes only)
    config.addinivalue_line("markers", "nojit: small-shape kernel test that also runs with NUMBA_DISABLE_JIT=1")


def quiet(*args, **kwargs):
    pass


class CodeWindows:
    """A small LM task with the tasks.py protocol: windows of real standard-library source, split in four."""

    name, task_type, metric, higher_is_better = "code-windows", "lm", "loss", False

    def __init__(self, tokenizer, block_size=BLOCK, chars=60_000):
        text = data.load_corpus("stdlib_code")[:chars]
        ids = tokenizer.encode(text)
        n = len(ids)
        self.tokenizer, self.block_size = tokenizer, block_size
        self.ids = {"train": ids[:int(0.7 * n)], "val": ids[int(0.7 * n):int(0.8 * n)],
                    "test": ids[int(0.8 * n):int(0.9 * n)], "shifted": ids[int(0.9 * n):]}

    def batch(self, split, batch_size, rng):
        return data.get_batch(self.ids[split], batch_size, self.block_size, rng)

    def evaluate(self, model, split):
        rng = np.random.default_rng(123)
        losses = [model(*self.batch(split, 16, rng))[1].item() for _ in range(2)]
        return {"loss": float(np.mean(losses))}


def one_blas_thread():
    """These models are tiny: BLAS threads only fight each other (and other jobs) on a 2-core machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional; without it the tests are merely slower on a busy machine
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
    """A 2-layer, 32-wide GPT pretrained for 400 steps on the broad corpus (validation loss ~3.0 nats/char,
    the unigram baseline ~3.3); its checkpoint path and tokenizer."""
    from tinyft.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("pretrain")
    config = PretrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, batch_size=16, lr=3e-2, min_lr=1e-3,
                            warmup_steps=5, steps=400, eval_every=400, eval_batches=2, checkpoint_every=1000,
                            sample_tokens=5, seed=0, out=str(out))
    with one_blas_thread():
        result = pretrain(config, progress=False, log=quiet)
    return result.checkpoint, result.tokenizer


@pytest.fixture(scope="session")
def task(pretrained):
    return CodeWindows(pretrained[1])


@pytest.fixture(scope="session")
def source_run(tmp_path_factory):
    """A 2-layer, 32-wide character GPT pretrained for 60 steps on the broad corpus, with its source splits."""
    from tinyft.forgetting import source_data
    from tinyft.pretrain import PretrainConfig, fixed_batches, pretrain

    out = tmp_path_factory.mktemp("pretrain_source")
    config = PretrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, batch_size=16, lr=1e-2, min_lr=1e-3,
                            warmup_steps=5, steps=60, eval_every=60, eval_batches=2, checkpoint_every=1000,
                            sample_tokens=5, seed=0, out=str(out))
    result = pretrain(config, progress=False, log=quiet)
    tokenizer, train_ids, val_ids = source_data(result.checkpoint)
    return {"path": result.checkpoint, "tokenizer": tokenizer, "source_train": train_ids,
            "measure": fixed_batches(val_ids, 4, 8, BLOCK, seed=4321), "task": CodeWindows(tokenizer, chars=40_000)}
