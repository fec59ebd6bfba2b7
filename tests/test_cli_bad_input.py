"""Bad input at the command line, one row each: every case exits non-zero with ONE line `error: ...` that names
the argument, prints no traceback, and creates or changes nothing on disk (no empty --out folder, no input
written over). The rows run `tinyft.cli.main(argv)` in-process; a few run `python -m tinyft` end to end.

To add a flag: add a row (argv, fragment). Placeholders in argv: {ckpt} a tiny pretrained checkpoint and {ckpt_dir}
its folder, {ft_dir} a folder holding a fine-tuned checkpoint, {tmp} the test's own folder (also the current
directory, so default --out folders would land there), prepared by make_landscape with the files below.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import CodeWindows, one_blas_thread, quiet

from tinyft import cli
from tinyft.finetune import FinetuneConfig, finetune
from tinyft.pretrain import PretrainConfig, pretrain

# --- fixtures: one tiny model for the whole file ------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 1-layer, 16-wide GPT pretrained 2 steps, and a fine-tuned copy of it (2 steps): their folders."""
    root = tmp_path_factory.mktemp("bad_input_models")
    config = PretrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=2, steps=2, warmup_steps=0, eval_every=2,
                            eval_batches=1, checkpoint_every=1000, sample_tokens=2, out=str(root / "pre"))
    with one_blas_thread():
        result = pretrain(config, progress=False, log=quiet)
        finetune(result.model, CodeWindows(result.tokenizer, block_size=16, chars=5000),
                 FinetuneConfig(steps=2, batch_size=2, warmup_steps=0, eval_every=2, out=str(root / "ft")),
                 progress=False, log=quiet)
    return {"ckpt": result.checkpoint, "ckpt_dir": str(root / "pre"), "ft_dir": str(root / "ft"), "root": str(root)}


def make_landscape(tmp):
    """The files and folders the rows point at."""
    (tmp / "file.txt").write_text("a file, not a folder\n")
    (tmp / "empty.txt").write_text("")
    (tmp / "one_char.txt").write_text("a")
    (tmp / "binary.bin").write_bytes(b"\x00\x01\x02text")
    (tmp / "ckpt_is_dir" / "ckpt.npz").mkdir(parents=True)  # pretrain/finetune would save over a folder
    (tmp / "history_is_dir" / "history.jsonl").mkdir(parents=True)
    (tmp / "runs_is_dir" / "runs.json").mkdir(parents=True)
    (tmp / "claims_is_dir" / "claims.json").mkdir(parents=True)
    (tmp / "bad_runs").mkdir()
    (tmp / "bad_runs" / "runs.json").write_text("{not json")
    (tmp / "other_runs").mkdir()
    (tmp / "other_runs" / "runs.json").write_text(json.dumps({"settings": {"steps": 999}, "runs": []}))
    (tmp / "bad_claims").mkdir()
    (tmp / "bad_claims" / "claims.json").write_text("[1, 2")
    (tmp / "demo_bad" / "pretrain" / "ckpt.npz").mkdir(parents=True)
    (tmp / "text_out").mkdir()
    (tmp / "text_out" / "history.jsonl").write_text("the corpus lives where pretrain writes its history\n" * 200)


def snapshot(*roots):
    """Every path under the roots with its kind, size and mtime: what 'nothing changed on disk' compares."""
    seen = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                st = os.lstat(path)
                seen[path] = (os.path.isdir(path), st.st_size, st.st_mtime_ns)
    return seen


# --- the rows -----------------------------------------------------------------------------------------------

FT = ["finetune", "--from", "{ckpt}", "--out", "{tmp}/ft", "--no-progress"]
FG = ["forgetting", "--from", "{ckpt}", "--out", "{tmp}/fg", "--no-progress"]
PT = ["pretrain", "--out", "{tmp}/pt", "--no-progress"]
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16"]

CASES = [
    # pretrain: numbers
    (PT + ["--steps", "0"], "--steps"),
    (PT + ["--steps", "-5"], "--steps"),
    (PT + ["--steps", "abc"], "--steps"),
    (PT + ["--lr", "inf"], "--lr"),
    (PT + ["--lr", "nan"], "--lr"),
    (PT + ["--lr", "0"], "--lr"),
    (PT + ["--lr", "-1e-3"], "--lr"),
    (PT + ["--min-lr", "-1"], "--min-lr"),
    (PT + ["--min-lr", "inf"], "--min-lr"),
    (PT + ["--dropout", "1"], "--dropout"),
    (PT + ["--dropout", "nan"], "--dropout"),
    (PT + ["--n-layer", "0"], "--n-layer"),
    (PT + ["--n-head", "0"], "--n-head"),
    (PT + ["--n-embd", "30", "--n-head", "4"], "--n-embd"),
    (PT + ["--block-size", "0"], "--block-size"),
    (PT + ["--batch-size", "0"], "--batch-size"),
    (PT + ["--warmup-steps", "-1"], "--warmup-steps"),
    (PT + ["--warmup-steps", "200", "--steps", "100"], "--warmup-steps"),
    (PT + ["--eval-every", "0"], "--eval-every"),
    (PT + ["--checkpoint-every", "0"], "--checkpoint-every"),
    (PT + ["--seed", "-1"], "--seed"),
    (PT + ["--tokenizer", "bpe", "--bpe-vocab-size", "100"], "--bpe-vocab-size"),
    (PT + ["--tokenizer", "word"], "--tokenizer"),
    # pretrain: the corpus and the output folder
    (PT + ["--corpus", "missing.txt"], "--corpus 'missing.txt': no such file or folder"),
    (PT + ["--corpus", "{tmp}/empty.txt"], "--corpus"),
    (PT + ["--corpus", "{tmp}/binary.bin"], "--corpus"),
    (PT + TINY + ["--corpus", "{tmp}/one_char.txt", "--tokenizer", "bpe"], "--corpus"),
    (PT + TINY + ["--corpus", "{tmp}/one_char.txt"], "--block-size"),
    (["pretrain", "--out", "{tmp}/file.txt"], "--out"),
    (["pretrain", "--out", "{tmp}/file.txt/sub"], "--out"),
    (["pretrain", "--out", "{tmp}/ckpt_is_dir"], "--out"),
    (["pretrain", "--out", "{tmp}/history_is_dir"], "--out"),
    (["pretrain", "--resume", "--out", "{tmp}/nothing_here"], "--resume"),
    (["pretrain", "--resume", "--out", "{ft_dir}"], "--resume"),
    (["pretrain", "--resume", "--out", "{ckpt_dir}", "--n-embd", "32"], "--resume"),
    (["pretrain", "--corpus", "{tmp}/text_out/history.jsonl", "--out", "{tmp}/text_out"], "--out"),
    # finetune
    (FT + ["--steps", "0"], "--steps"),
    (FT + ["--lr", "inf"], "--lr"),
    (FT + ["--lr", "1e30", "--head-lr", "nan"], "--head-lr"),
    (FT + ["--layer-decay", "0"], "--layer-decay"),
    (FT + ["--weight-decay", "-1"], "--weight-decay"),
    (FT + ["--k", "0"], "--k"),
    (FT + ["--strategy", "last_k", "--k", "5"], "--k"),
    (FT + ["--lora-rank", "0"], "--lora-rank"),
    (FT + ["--lora-alpha", "inf"], "--lora-alpha"),
    (FT + ["--lora-targets", "nope"], "--lora-targets"),
    (FT + ["--lp-steps", "-1"], "--lp-steps"),
    (FT + ["--n-examples", "0"], "--n-examples"),
    (FT + ["--task", "kind", "--label-noise", "1"], "--label-noise"),
    (FT + ["--task", "kind", "--imbalance", "0.5"], "--imbalance"),
    (FT + ["--label-noise", "0.2"], "--label-noise"),
    (FT + ["--task", "nope"], "--task"),
    (FT + ["--batch-size", "0"], "--batch-size"),
    (FT + ["--warmup-steps", "-1"], "--warmup-steps"),
    (FT + ["--eval-every", "0"], "--eval-every"),
    (FT + ["--seed", "-1"], "--seed"),
    (FT + ["--strategy", "magic"], "--strategy"),
    (["finetune", "--out", "{tmp}/ft"], "--from"),
    (["finetune", "--from", "missing.npz", "--out", "{tmp}/ft"], "--from"),
    (["finetune", "--from", "{tmp}", "--out", "{tmp}/ft"], "--from"),
    (["finetune", "--from", "{tmp}/file.txt", "--out", "{tmp}/ft"], "--from"),
    (["finetune", "--from", "{ckpt}", "--out", "{tmp}/file.txt"], "--out"),
    (["finetune", "--from", "{ckpt}", "--out", "{tmp}/ckpt_is_dir"], "--out"),
    # finetune never writes over its own input, however the folder is spelled
    (["finetune", "--from", "{ckpt}", "--out", "{ckpt_dir}"], "pass another --out"),
    (["finetune", "--from", "{ckpt}", "--out", "{ckpt_dir}/./"], "pass another --out"),
    (["finetune", "--from", "{ckpt}", "--out", "{ckpt_dir_relative}"], "pass another --out"),
    (["finetune", "--from", "{ckpt}", "--out", "{tmp}/link_to_ckpt_dir"], "pass another --out"),
    (["finetune", "--from", "{tmp}/link_to_ckpt_dir/ckpt.npz", "--out", "{ckpt_dir}/../pre"], "pass another --out"),
    # forgetting
    (["forgetting", "--out", "{tmp}/fg"], "--from"),
    (["forgetting", "--from", "missing.npz", "--out", "{tmp}/fg"], "--from"),
    (FG + ["--lrs", "1e-3,inf"], "--lrs"),
    (FG + ["--lrs", "0"], "--lrs"),
    (FG + ["--lrs", "abc"], "--lrs"),
    (FG + ["--strategies", "full,magic"], "--strategies"),
    (FG + ["--mitigations", "none,dropout"], "--mitigations"),
    (FG + ["--replay-fraction", "1.5"], "--replay-fraction"),
    (FG + ["--replay-fraction", "nan"], "--replay-fraction"),
    (FG + ["--wise-alphas", "2"], "--wise-alphas"),
    (FG + ["--wise-alphas", "0,0.5,-0.1"], "--wise-alphas"),
    (FG + ["--ewc-lambda", "-1"], "--ewc-lambda"),
    (FG + ["--l2sp-alpha", "inf"], "--l2sp-alpha"),
    (FG + ["--steps", "0"], "--steps"),
    (FG + ["--seeds", "0"], "--seeds"),
    (FG + ["--seed", "-1"], "--seed"),
    (FG + ["--batch-size", "0"], "--batch-size"),
    (FG + ["--task", "nope"], "--task"),
    (["forgetting", "--from", "{ckpt}", "--out", "{tmp}/file.txt"], "--out"),
    (["forgetting", "--from", "{ckpt}", "--out", "{tmp}/file.txt/sub"], "--out"),
    (["forgetting", "--from", "{ckpt}", "--out", "{tmp}/runs_is_dir"], "--out"),
    (["forgetting", "--from", "{ckpt}", "--out", "{tmp}/bad_runs"], "--out"),
    (["forgetting", "--from", "{ckpt}", "--out", "{tmp}/other_runs"], "--out"),
    # demo
    (["demo", "--lr", "-1"], "--lr"),
    (["demo", "--lr", "nan"], "--lr"),
    (["demo", "--steps", "0"], "--steps"),
    (["demo", "--pretrain-steps", "0"], "--pretrain-steps"),
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--out", "{tmp}/file.txt"], "--out"),
    (["demo", "--out", "{tmp}/demo_bad"], "--out"),
    # claims
    (["claims", "--only", "C12"], "--only"),
    (["claims", "--only", ","], "--only"),
    (["claims", "--seeds", "0"], "--seeds"),
    (["claims", "--seeds", "-2"], "--seeds"),
    (["claims", "--out", "{tmp}/file.txt"], "--out"),
    (["claims", "--out", "{tmp}/file.txt/sub"], "--out"),
    (["claims", "--out", "{tmp}/claims_is_dir"], "--out"),
    (["claims", "--out", "{tmp}/bad_claims"], "--out"),
    # the command itself
    (["pretrain", "--no-such-flag"], "--no-such-flag"),
    (["nope"], "nope"),
]


def fill(argv, places):
    return [arg.format(**places) for arg in argv]


@pytest.fixture
def places(models, tmp_path, monkeypatch):
    make_landscape(tmp_path)
    os.symlink(models["ckpt_dir"], tmp_path / "link_to_ckpt_dir")
    monkeypatch.chdir(tmp_path)  # default --out folders would be made here, where the snapshot sees them
    return {**models, "tmp": str(tmp_path), "ckpt_dir_relative": os.path.relpath(models["ckpt_dir"], tmp_path)}


def test_there_are_at_least_fifty_rows_over_all_five_commands():
    commands = {argv[0] for argv, _ in CASES}
    assert len(CASES) >= 50 and commands >= {"pretrain", "finetune", "forgetting", "demo", "claims"}


@pytest.mark.parametrize("argv, fragment", CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_bad_input_is_one_line_naming_the_argument_and_changes_nothing(argv, fragment, places, capsys):
    argv = fill(argv, places)
    before = snapshot(places["tmp"], places["root"])
    code = cli.main(argv)  # must return, not raise
    out, err = capsys.readouterr()
    assert code != 0, f"exit code 0 for {argv}"
    assert "Traceback" not in out + err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], f"{fragment!r} not named in: {lines[0]}"
    assert out == "", f"work began before the error: {out[:300]}"
    assert snapshot(places["tmp"], places["root"]) == before, "something was created or changed on disk"


# --- end to end: the real process, its exit code and its standard error --------------------------------------

E2E = [
    (["forgetting", "--from", "{ckpt}", "--out", "{tmp}/file.txt"], "--out"),  # was a FileExistsError traceback
    (["pretrain", "--lr", "nan", "--out", "{tmp}/pt"], "--lr"),
    (["finetune", "--from", "{ckpt}", "--out", "{ckpt_dir}"], "pass another --out"),
]


@pytest.mark.parametrize("argv, fragment", E2E, ids=[a[0] for a, _ in E2E])
def test_python_m_tinyft_bad_input_exits_2_with_one_line(argv, fragment, places):
    argv = fill(argv, places)
    before = snapshot(places["tmp"], places["root"])
    here = os.path.dirname(os.path.dirname(os.path.abspath(cli.__file__)))  # this copy of tinyft, not another
    env = {**os.environ, "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "tinyft", *argv], capture_output=True, text=True, timeout=300,
                          cwd=places["tmp"], env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1 and fragment in done.stderr
    assert snapshot(places["tmp"], places["root"]) == before
