"""Never lose a good model: a NaN stops the loops naming the step and keeps the last good checkpoint, Ctrl-C
anywhere in a step (or in its evaluation) resumes bit for bit, a diverging sweep run is recorded and the sweep
goes on, killed saves leave no litter, and the logs stay readable. (Bad command-line input: test_cli_bad_input.py.)

The oracles are independent of the code under test: the step where a NaN is planted, an uninterrupted run of
the same settings, files made by hand with known pids and ages."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import CodeWindows, one_blas_thread, quiet

from tinyft import checkpoint, cli, experiments, kernels, optim
from tinyft.finetune import FinetuneConfig, finetune
from tinyft.forgetting import perplexity
from tinyft.kernels import _backend
from tinyft.nn import GPT
from tinyft.loops import far_above_warning
from tinyft.pretrain import PretrainConfig, pretrain

TIMING = ("time_s", "tokens_per_s")  # the only history fields allowed to differ between two runs


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread_here():
    with one_blas_thread():
        yield


def tiny_config(out, **overrides):
    settings = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, lr=3e-3, min_lr=3e-4,
                    warmup_steps=2, steps=12, eval_every=6, eval_batches=2, checkpoint_every=4, dropout=0.1,
                    sample_tokens=4, seed=0, out=str(out))
    settings.update(overrides)
    return PretrainConfig(**settings)


def plant_in_forward(monkeypatch, on_call, action, training=True):
    """Make GPT.forward run `action(loss)` on its `on_call`-th call in training mode (or in eval mode)."""
    real, calls = GPT.forward, []

    def forward(self, idx, targets=None):
        logits, loss = real(self, idx, targets)  # the real forward runs first (dropout draws included)
        if self.training == training:
            calls.append(1)
            if len(calls) == on_call:
                loss = action(loss)
        return logits, loss

    monkeypatch.setattr(GPT, "forward", forward)
    return calls


def nan_loss(loss):
    return loss * float("nan")


def ctrl_c(loss):
    raise KeyboardInterrupt


def without_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def assert_same_checkpoints(path_a, path_b):
    """Every array (weights, AdamW moments), the step, both random states and the history (timing aside)."""
    a, b = checkpoint.load(path_a), checkpoint.load(path_b)
    assert a.model_state.keys() == b.model_state.keys()
    for name in a.model_state:
        np.testing.assert_array_equal(a.model_state[name], b.model_state[name], err_msg=name)
    assert a.optimizer_state["state"].keys() == b.optimizer_state["state"].keys()
    for index, entry in a.optimizer_state["state"].items():
        for key, array in entry.items():
            np.testing.assert_array_equal(array, b.optimizer_state["state"][index][key], err_msg=f"optim {index} {key}")
    for key in ("step", "batch_rng_state", "rng_state"):
        assert a.meta[key] == b.meta[key], key
    assert without_timing(a.meta["history"]) == without_timing(b.meta["history"])


# --- 2. NaN / inf: stop at the step, name it, keep the last good model ------------------------------------


def test_pretrain_stops_at_the_planted_nan_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    good = pretrain(tiny_config(tmp_path, steps=8), progress=False, log=quiet)
    ckpt, history = tmp_path / "ckpt.npz", tmp_path / "history.jsonl"
    saved_bytes, saved_history = ckpt.read_bytes(), history.read_text()
    plant_in_forward(monkeypatch, on_call=2, action=nan_loss)  # the 2nd step after resuming: step 10
    with pytest.raises(optim.DivergenceError) as caught:
        pretrain(tiny_config(tmp_path, steps=12), resume=True, progress=False, log=quiet)
    err = caught.value
    assert err.step == 10 and math.isnan(err.loss)
    assert "step 10" in str(err) and str(ckpt) in str(err) and "(step 8)" in str(err)
    # the last finite loss is step 9's: the same resume, without the NaN, says what it was
    monkeypatch.undo()
    pretrain(tiny_config(tmp_path / "twin", steps=8), progress=False, log=quiet)
    twin = pretrain(tiny_config(tmp_path / "twin", steps=12), resume=True, progress=False, log=quiet)
    assert err.last_finite_loss == twin.history[8]["train_loss"]
    assert f"{twin.history[8]['train_loss']:.4f}" in str(err)
    assert ckpt.read_bytes() == saved_bytes and history.read_text() == saved_history  # the good run is whole
    assert checkpoint.load(ckpt).meta["step"] == good.steps == 8


def test_pretrain_nan_before_any_checkpoint_says_none_was_written(tmp_path, monkeypatch):
    plant_in_forward(monkeypatch, on_call=3, action=nan_loss)
    with pytest.raises(optim.DivergenceError, match="step 3.*no checkpoint was written"):
        pretrain(tiny_config(tmp_path / "run", checkpoint_every=100), progress=False, log=quiet)
    assert not (tmp_path / "run").exists()  # not even an empty --out folder


def test_pretrain_diverging_from_a_huge_lr_through_the_cli_exits_1_and_keeps_the_checkpoint(tmp_path, capsys):
    tiny = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "2",
            "--eval-every", "4", "--checkpoint-every", "4", "--warmup-steps", "0", "--out", str(tmp_path), "--no-progress"]
    assert cli.main(["pretrain", *tiny, "--steps", "4"]) == 0
    saved = (tmp_path / "ckpt.npz").read_bytes()
    capsys.readouterr()
    assert cli.main(["pretrain", *tiny, "--steps", "12", "--resume", "--lr", "1e30"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged at step" in err and "last good checkpoint" in err
    assert (tmp_path / "ckpt.npz").read_bytes() == saved


@pytest.mark.parametrize("field", ["lr", "min_lr", "dropout", "weight_decay", "grad_clip"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_pretrain_config_refuses_non_finite_numbers(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(tmp_path, **{field: value}).validate()


@pytest.mark.parametrize("field", ["lr", "head_lr", "layer_decay", "weight_decay", "lora_alpha"])
def test_finetune_config_refuses_non_finite_numbers(field):
    with pytest.raises(ValueError, match=field):
        FinetuneConfig(**{field: float("inf")}).validate()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny pretrained GPT, its checkpoint, and a small code task on its tokenizer."""
    out = tmp_path_factory.mktemp("reliable_base")
    result = pretrain(tiny_config(out, steps=4, dropout=0.0), progress=False, log=quiet)
    return {"path": result.checkpoint, "task": CodeWindows(result.tokenizer, block_size=16, chars=20_000)}


@pytest.mark.parametrize("on_call, phase", [(2, "probe"), (5, "full")])
def test_finetune_stops_at_a_nan_in_either_lp_ft_phase_and_saves_nothing(base, tmp_path, monkeypatch, on_call, phase):
    plant_in_forward(monkeypatch, on_call=on_call, action=nan_loss)
    config = FinetuneConfig(strategy="lp_ft", lp_steps=3, steps=3, batch_size=2, warmup_steps=0, eval_every=10,
                            out=str(tmp_path / "ft"))
    with pytest.raises(optim.DivergenceError) as caught:
        finetune(checkpoint.load_model(base["path"]), base["task"], config, progress=False, log=quiet)
    assert caught.value.step == on_call and f"step {on_call}" in str(caught.value)
    assert f"{phase} phase" in str(caught.value) and "nothing was saved" in str(caught.value)
    assert not (tmp_path / "ft" / "ckpt.npz").exists()


def test_finetune_with_lr_1e30_exits_1_naming_the_step_instead_of_saving_a_nan_model(base, tmp_path, capsys):
    out = tmp_path / "ft"
    code = cli.main(["finetune", "--from", base["path"], "--lr", "1e30", "--steps", "4", "--batch-size", "2",
                     "--n-examples", "40", "--eval-every", "4", "--warmup-steps", "0", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr()
    assert code == 1 and "diverged at step" in printed.err and printed.err.count("\n") == 1
    assert "after:" not in printed.out and not (out / "ckpt.npz").exists()


def test_a_run_that_ends_far_above_its_start_or_unigram_is_warned_about():
    assert far_above_warning(1891.0, 4.6, 3.26, lr=10.0).startswith("warning:")  # the probe
    assert far_above_warning(6.1, 5.0, 3.3) is not None  # more than 1 nat above where it started
    assert far_above_warning(7.0, 7.5, 3.3) is not None  # below the start, but above twice the unigram
    assert far_above_warning(4.8, 5.0, 3.3) is None  # a short run that has learned a little
    assert far_above_warning(2.0, 5.0, 3.3) is None


def test_pretrain_logs_the_warning_when_its_final_loss_is_far_above(tmp_path, monkeypatch):
    import tinyft.pretrain as pretrain_module

    monkeypatch.setattr(pretrain_module, "estimate_loss", lambda model, batches: 50.0)
    lines = []
    pretrain(tiny_config(tmp_path, steps=2, warmup_steps=0), progress=False, log=lines.append)
    assert any(line.startswith("warning: the run ended at loss 50.000") for line in lines)


# --- 3. Ctrl-C mid-step and during evaluation, then --resume: bit-identical ---------------------------------


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    return pretrain(tiny_config(out), progress=False, log=quiet)


def test_ctrl_c_inside_a_steps_forward_then_resume_is_bit_identical(straight, tmp_path, monkeypatch):
    plant_in_forward(monkeypatch, on_call=6, action=ctrl_c)  # after step 6's batch and its dropout draws
    cut = pretrain(tiny_config(tmp_path), progress=False, log=quiet)
    assert cut.interrupted and cut.steps == 5 and checkpoint.load(cut.checkpoint).meta["step"] == 5
    monkeypatch.undo()
    resumed = pretrain(tiny_config(tmp_path), resume=True, progress=False, log=quiet)
    assert resumed.steps == 12
    assert without_timing(resumed.history) == without_timing(straight.history)
    assert_same_checkpoints(resumed.checkpoint, straight.checkpoint)


def test_ctrl_c_after_backward_before_the_update_then_resume_is_bit_identical(straight, tmp_path, monkeypatch):
    import tinyft.pretrain as pretrain_module

    real, calls = optim.clip_grad_norm, []

    def clip_then_ctrl_c(params, max_norm):
        calls.append(1)
        norm = real(params, max_norm)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return norm

    monkeypatch.setattr(pretrain_module.optim, "clip_grad_norm", clip_then_ctrl_c)
    cut = pretrain(tiny_config(tmp_path), progress=False, log=quiet)
    assert cut.steps == 6
    monkeypatch.undo()
    resumed = pretrain(tiny_config(tmp_path), resume=True, progress=False, log=quiet)
    assert_same_checkpoints(resumed.checkpoint, straight.checkpoint)


def test_ctrl_c_during_evaluation_keeps_the_row_and_resume_is_bit_identical(straight, tmp_path, monkeypatch):
    plant_in_forward(monkeypatch, on_call=1, action=ctrl_c, training=False)  # the evaluation after step 6
    cut = pretrain(tiny_config(tmp_path), progress=False, log=quiet)
    assert cut.interrupted and cut.steps == 6
    assert [row["step"] for row in cut.history] == list(range(1, 7))  # step 6's row is kept
    monkeypatch.undo()
    resumed = pretrain(tiny_config(tmp_path), resume=True, progress=False, log=quiet)
    assert resumed.history[5]["val_loss"] == straight.history[5]["val_loss"]  # measured again on resume
    assert without_timing(resumed.history) == without_timing(straight.history)
    assert_same_checkpoints(resumed.checkpoint, straight.checkpoint)


def test_a_real_sigint_during_the_optimizer_update_is_held_until_the_step_is_whole(straight, tmp_path, monkeypatch):
    real, calls = optim.AdamW.step, []

    def step_with_sigint(self):
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the update
        return real(self)

    monkeypatch.setattr(optim.AdamW, "step", step_with_sigint)
    cut = pretrain(tiny_config(tmp_path), progress=False, log=quiet)
    assert cut.interrupted and cut.steps == 4 and len(cut.history) == 4  # the update finished and was counted
    monkeypatch.undo()
    resumed = pretrain(tiny_config(tmp_path), resume=True, progress=False, log=quiet)
    assert_same_checkpoints(resumed.checkpoint, straight.checkpoint)


def test_finetune_ctrl_c_during_evaluation_keeps_that_steps_row(base, monkeypatch):
    task = base["task"]
    real_evaluate, calls = task.evaluate, []

    def evaluate(model, split):  # the before-evaluations (3 splits) run first; the 4th is step 2's
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_evaluate(model, split)

    monkeypatch.setattr(task, "evaluate", evaluate)
    config = FinetuneConfig(steps=4, batch_size=2, warmup_steps=0, eval_every=2, out=None)
    result = finetune(checkpoint.load_model(base["path"]), task, config, progress=False, log=quiet)
    assert result.interrupted and [row["step"] for row in result.history] == [1, 2]


# --- 4. a diverging run in the forgetting sweep --------------------------------------------------------------


def strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_sweep_records_a_diverging_lr_as_diverged_goes_on_and_a_rerun_does_not_crash(base, tmp_path, monkeypatch,
                                                                                       capsys):
    calls = []
    real = experiments.finetune

    def counting(*args, **kwargs):
        calls.append(args[2].lr)
        return real(*args, **kwargs)

    monkeypatch.setattr(experiments, "finetune", counting)
    kwargs = dict(strategies=("full",), lrs=(1e30, 3e-3), mitigations=("none",), seeds=(0,), steps=3,
                  out=str(tmp_path), task=base["task"], batch_size=2, source_batches=2, source_batch_size=2,
                  wise_alphas=(0.0, 0.5), log=quiet)
    first = experiments.run_sweep(base["path"], **kwargs)
    assert calls == [1e30, 3e-3]  # the sweep went on after the diverged run
    diverged, fine = first["runs"]
    assert diverged["diverged"] is True and diverged["diverged_at_step"] >= 1
    for key in ("target_after", "target_gain", "source_after", "forgetting"):
        assert diverged[key] is None
    assert fine["diverged"] is False and math.isfinite(fine["target_gain"])
    saved = strict_json(tmp_path / "runs.json")  # valid JSON: null where a number is not finite
    assert [r["diverged"] for r in saved["runs"]] == [True, False]
    pareto = strict_json(tmp_path / "pareto.json")
    assert pareto["pareto_optimal"] == ["full lr=0.003 none"]
    table = experiments.format_table(first["summary"])
    assert "diverged (1/1)" in table and "full lr=1e+30 none" in table
    assert "diverged" in (tmp_path / "runs.csv").read_text().splitlines()[0]

    second = experiments.run_sweep(base["path"], **kwargs)  # the rerun reads the diverged row back
    assert calls == [1e30, 3e-3] and second["runs"] == first["runs"]


def test_forgetting_cli_prints_diverged_in_its_table_and_json(base, tmp_path, capsys):
    argv = ["forgetting", "--from", base["path"], "--strategies", "full", "--lrs", "3e-3,1e30", "--mitigations",
            "none", "--steps", "2", "--batch-size", "2", "--out", str(tmp_path), "--json", "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1], parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert [r["diverged"] for r in summary["runs"]] == [False, True]
    assert "diverged (1/1)" in out
    assert cli.main(argv) == 0  # the rerun finishes too


def test_ctrl_c_in_a_sweep_stops_it_without_recording_the_run_in_progress(base, tmp_path, monkeypatch):
    plant_in_forward(monkeypatch, on_call=5, action=ctrl_c)  # the 2nd run's 2nd step
    with pytest.raises(KeyboardInterrupt):
        experiments.run_sweep(base["path"], strategies=("full", "bitfit"), lrs=(3e-3,), mitigations=("none",),
                              seeds=(0,), steps=3, out=str(tmp_path), task=base["task"], batch_size=2,
                              source_batches=1, source_batch_size=2, log=quiet)
    assert [r["strategy"] for r in strict_json(tmp_path / "runs.json")["runs"]] == ["full"]


def test_perplexity_of_a_blown_up_loss_is_inf_not_an_overflow_error():
    assert perplexity(1891.0) == math.inf and perplexity(0.0) == 1.0
    assert experiments.json_safe({"a": [math.inf, float("nan"), 1.5]}) == {"a": [None, None, 1.5]}


# --- 6-8. validation before work, messages, the warmup default ------------------------------------------------


def test_the_default_warmup_follows_steps_and_an_explicit_one_too_large_still_errors(tmp_path, capsys):
    assert PretrainConfig(steps=60).warmup() == 6 and PretrainConfig(steps=5000).warmup() == 100
    PretrainConfig(steps=60).validate()  # `pretrain --steps 60` no longer trips on the warmup
    with pytest.raises(ValueError, match="warmup_steps"):
        PretrainConfig(steps=60, warmup_steps=100).validate()
    tiny = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "2",
            "--eval-every", "3", "--out", str(tmp_path), "--no-progress"]
    assert cli.main(["pretrain", *tiny, "--steps", "3"]) == 0


def test_bpe_on_a_one_character_corpus_names_the_corpus_not_chunk_size(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("a")
    with pytest.raises(ValueError) as caught:
        pretrain(tiny_config(tmp_path / "out", corpus=str(one), tokenizer="bpe", bpe_vocab_size=300), progress=False,
                 log=quiet)
    assert "--corpus" in str(caught.value) and "chunk_size" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_finetune_python_api_refuses_to_write_over_its_base_checkpoint_before_any_work(base, monkeypatch):
    folder = os.path.dirname(base["path"])
    before = open(base["path"], "rb").read()
    plant_in_forward(monkeypatch, on_call=1, action=ctrl_c)  # would fire if any training began
    with pytest.raises(ValueError, match="pass another --out"):
        finetune(checkpoint.load_model(base["path"]), base["task"], FinetuneConfig(steps=2, out=folder + "/."),
                 base_checkpoint=base["path"], progress=False, log=quiet)
    assert open(base["path"], "rb").read() == before


# --- 9. logs ------------------------------------------------------------------------------------------------


def test_progress_into_a_log_file_draws_about_ten_lines_not_one_per_step(tmp_path, capsys):
    pretrain(tiny_config(tmp_path, steps=60, eval_every=60, checkpoint_every=100), progress=True, log=quiet)
    err = capsys.readouterr().err  # pytest's capture: not a terminal, as a CI log
    draws = err.count("pretrain:")
    assert 2 <= draws <= 14, f"{draws} progress lines for 60 steps"


def test_compiling_notice_is_said_once_when_the_cache_holds_no_kernel_index(tmp_path, monkeypatch):
    monkeypatch.setattr(_backend, "_current", "numba")
    monkeypatch.setattr(_backend.numba.config, "DISABLE_JIT", False)
    monkeypatch.setattr(_backend.numba.config, "CACHE_DIR", str(tmp_path))
    assert kernels.cache_is_cold()
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    (tmp_path / "some" / "where").mkdir(parents=True)
    (tmp_path / "some" / "where" / f"attention._causal_softmax_rows-196.{tag}.nbi").write_bytes(b"")
    assert not kernels.cache_is_cold()

    monkeypatch.setattr(_backend, "cache_is_cold", lambda: True)
    monkeypatch.setitem(_backend._notice, "given", False)
    lines = []
    pretrain(tiny_config(tmp_path / "a", steps=2), progress=False, log=lines.append)
    pretrain(tiny_config(tmp_path / "b", steps=2), progress=False, log=lines.append)
    assert sum(line.startswith("compiling kernels (first run only)") for line in lines) == 1


# --- 10. litter and threads ---------------------------------------------------------------------------------


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_files_of_a_killed_save_are_removed_on_the_next_save_but_never_a_live_writers(straight, tmp_path):
    model = checkpoint.load_model(straight.checkpoint)
    gone, old = dead_pid(), time.time() - 3600

    def temp(name, age_from=None):
        path = tmp_path / name
        path.write_bytes(b"half a checkpoint")
        if age_from is not None:
            os.utime(path, (age_from, age_from))
        return name

    removed = {temp(f".ckpt.npz.pid{gone}.abc123.tmp", old),  # its writer is gone: stale
               temp(".ckpt.npz.k3j4h5x_.tmp", old)}  # an older tinyft's name, an hour old: stale
    kept = {temp(f".ckpt.npz.pid{os.getpid()}.live01.tmp", old),  # a live writer (this process), however old
            temp(f".ckpt.npz.pid{gone}.fresh1.tmp"),  # written a moment ago: maybe another machine's writer
            temp(".ckpt.npz.new12345.tmp"),  # unnamed, but fresh
            temp(f".other.npz.pid{gone}.qqq111.tmp", old)}  # another file's temp: that file's next save cleans it
    checkpoint.save(tmp_path / "ckpt.npz", model)
    left = set(os.listdir(tmp_path))
    assert not removed & left and kept <= left and "ckpt.npz" in left


def test_thread_counts_are_recorded_and_a_resume_under_other_counts_says_so(tmp_path, monkeypatch):
    pretrain(tiny_config(tmp_path, steps=2), progress=False, log=quiet)
    assert checkpoint.load(tmp_path / "ckpt.npz").meta["threads"] == kernels.thread_settings()
    monkeypatch.setattr(kernels, "thread_settings", lambda: {"numba": 99, "blas": 1})
    lines = []
    pretrain(tiny_config(tmp_path, steps=3), resume=True, progress=False, log=lines.append)
    assert any(line.startswith("note:") and "threads" in line and "99" in line for line in lines)
