"""Pretraining: the loop learns, Ctrl-C saves a checkpoint, resume is bit-identical, the CLI works end to end."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tinyft import checkpoint
from tinyft.pretrain import PretrainConfig, StopAfter, pretrain


def tiny_config(out, **overrides):
    settings = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=4, lr=3e-3, min_lr=3e-4,
                    warmup_steps=2, steps=12, eval_every=6, eval_batches=2, checkpoint_every=4,
                    sample_tokens=10, seed=0, out=str(out))
    settings.update(overrides)
    return PretrainConfig(**settings)


def quiet(*args, **kwargs):
    pass


def test_loss_decreases_on_the_default_corpus_within_a_short_run(tmp_path):
    config = tiny_config(tmp_path, steps=300, eval_every=100, lr=1e-2, min_lr=1e-3, batch_size=8)
    result = pretrain(config, progress=False, log=quiet)
    first = np.mean([row["train_loss"] for row in result.history[:3]])
    assert result.final_train_loss < first - 1.0
    assert result.final_val_loss < result.unigram_val_loss  # it learned more than letter frequencies
    assert os.path.exists(result.checkpoint)
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == 300 and json.loads(lines[-1])["step"] == 300


def test_interrupt_saves_a_checkpoint_and_resume_continues_bit_identically(tmp_path):
    straight = pretrain(tiny_config(tmp_path / "straight"), progress=False, log=quiet)

    interrupted = pretrain(tiny_config(tmp_path / "split"), progress=False, log=quiet, callbacks=[StopAfter(5)])
    assert interrupted.interrupted and interrupted.steps == 5
    meta = checkpoint.load(interrupted.checkpoint).meta
    assert meta["step"] == 5 and meta["stage"] == "pretrain"
    resumed = pretrain(tiny_config(tmp_path / "split"), resume=True, progress=False, log=quiet)

    assert resumed.steps == straight.steps == 12
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_callbacks_see_every_step_row_and_the_first_true_stops_the_run(tmp_path):
    class Watch:
        def __init__(self):
            self.rows = []

        def after_step(self, step, model, row):
            self.rows.append((step, row["train_loss"]))
            return step == 3

    watch = Watch()
    result = pretrain(tiny_config(tmp_path), progress=False, log=quiet, callbacks=[watch, StopAfter(10)])
    assert result.interrupted and result.steps == 3
    assert watch.rows == [(r["step"], r["train_loss"]) for r in result.history]
    assert checkpoint.load(result.checkpoint).meta["step"] == 3
    with pytest.raises(ValueError, match="after_step"):
        pretrain(tiny_config(tmp_path / "bad"), progress=False, log=quiet, callbacks=[lambda *a: True])
    with pytest.raises(ValueError, match="StopAfter"):
        StopAfter(0)


def test_resume_refuses_a_checkpoint_with_other_settings(tmp_path):
    pretrain(tiny_config(tmp_path, steps=2), progress=False, log=quiet)
    with pytest.raises(ValueError, match="n_embd"):
        pretrain(tiny_config(tmp_path, steps=4, n_embd=16), resume=True, progress=False, log=quiet)


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="corpus"):
        pretrain(tiny_config(tmp_path, corpus="no_such_corpus"), progress=False, log=quiet)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        pretrain(tiny_config(tmp_path, corpus=str(empty)), progress=False, log=quiet)
    short = tmp_path / "short.txt"
    short.write_text("just a few words\n")
    with pytest.raises(ValueError, match="block.size"):
        pretrain(tiny_config(tmp_path, corpus=str(short)), progress=False, log=quiet)
    with pytest.raises(ValueError, match="resume"):
        pretrain(tiny_config(tmp_path / "fresh"), resume=True, progress=False, log=quiet)
    with pytest.raises(ValueError, match="n_embd"):
        pretrain(tiny_config(tmp_path, n_embd=30, n_head=4), progress=False, log=quiet)


def unwritable_folder(tmp_path):
    """An existing folder this process may not write to, root included, or None where there is none.
    A folder with mode 0o500 stops any other user; root ignores modes, but not a read-only file system
    (/proc/sys on Linux, where os.access(..., W_OK) is False even for root)."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return locked
    if os.path.isdir("/proc/sys") and not os.access("/proc/sys", os.W_OK):
        return Path("/proc/sys")
    return None


def test_out_that_cannot_be_created_is_a_clear_error_for_every_user(tmp_path):
    blocker = tmp_path / "a_file"  # a regular file as the parent: no user, root included, can make the folder
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"--out .*a_file.*cannot create the folder.*writable"):
        pretrain(tiny_config(blocker / "run"), progress=False, log=quiet)


def test_unwritable_out_is_a_clear_error(tmp_path):
    folder = unwritable_folder(tmp_path)
    if folder is None:
        pytest.skip("running as root with no read-only folder to point --out at")
    with pytest.raises(ValueError, match=r"--out .* is not writable"):
        pretrain(tiny_config(folder), progress=False, log=quiet)


def test_resume_auto_trains_once_then_returns_the_finished_run(tmp_path):
    first = pretrain(tiny_config(tmp_path, steps=3), resume="auto", progress=False, log=quiet)
    again = pretrain(tiny_config(tmp_path, steps=3), resume="auto", progress=False, log=quiet)
    assert again.steps == first.steps == 3
    assert again.wall_s == first.wall_s  # no step ran the second time: training time came from the checkpoint
    for name, array in first.model.state_dict().items():
        np.testing.assert_array_equal(array, again.model.state_dict()[name])


def test_gelu_setting_reaches_the_model_and_its_checkpoint_and_resume_refuses_another(tmp_path):
    result = pretrain(tiny_config(tmp_path, steps=2, gelu="exact"), progress=False, log=quiet)
    assert result.model.config.gelu == "exact"
    assert checkpoint.load(result.checkpoint).config["gelu"] == "exact"
    assert checkpoint.load_model(result.checkpoint).config.gelu == "exact"
    with pytest.raises(ValueError, match="gelu"):
        pretrain(tiny_config(tmp_path, steps=4, gelu="tanh"), resume=True, progress=False, log=quiet)
    with pytest.raises(ValueError, match="gelu must be one of 'tanh', 'exact'"):
        tiny_config(tmp_path, gelu="erf").validate()


def test_a_finished_run_read_back_is_not_rewritten(tmp_path):
    """resume="auto" on a finished run (the course models' cache) reads the checkpoint and writes nothing."""
    import os

    from tinyft.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=2, steps=3, warmup_steps=1,
                            eval_every=3, eval_batches=1, checkpoint_every=100, sample_tokens=5, out=str(tmp_path))
    first = pretrain(config, progress=False, log=lambda *a: None)
    ckpt = tmp_path / "ckpt.npz"
    before = (ckpt.stat().st_mtime_ns, ckpt.read_bytes())
    os.utime(ckpt, ns=(1, 1))
    again = pretrain(config, resume="auto", progress=False, log=lambda *a: None)
    assert ckpt.stat().st_mtime_ns == 1 and ckpt.read_bytes() == before[1]
    assert again.steps == first.steps == 3
