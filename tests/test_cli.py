"""The command line (tinyft/cli.py): every command runs end to end and prints its JSON summary last, bad input
is one clear line with exit code 2, and no file below cli.py imports argparse."""

import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinyft import checkpoint, cli
from tinyft.autograd import manual_seed
from tinyft.nn import GPT, GPTConfig

SOURCES = Path(cli.__file__).resolve().parent


def tiny_gpt(vocab=20, n_layer=2, seed=0):
    manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=n_layer, n_head=2, n_embd=16))


def test_only_the_command_line_imports_argparse():
    importers = []
    for path in sorted(SOURCES.rglob("*.py")):
        if path.name in ("cli.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) else [])
            if "argparse" in names:
                importers.append(path.name)
    assert not importers, f"argparse imported below the command line by {importers}"


def test_main_turns_bad_input_into_one_line_and_exit_code_2(tmp_path, capsys):
    assert cli.main(["pretrain", "--corpus", "nope", "--out", str(tmp_path), "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# --- pretrain --------------------------------------------------------------------------------------------


def test_cli_runs_end_to_end_and_prints_a_json_summary_last(tmp_path):
    cmd = [sys.executable, "-m", "tinyft", "pretrain", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
           "--block-size", "16", "--batch-size", "2", "--steps", "4", "--eval-every", "2", "--warmup-steps", "1",
           "--out", str(tmp_path), "--no-progress", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("final_val_loss", "steps", "tokens_per_s", "checkpoint"):
        assert key in summary
    assert summary["steps"] == 4 and os.path.exists(summary["checkpoint"])


def test_cli_bad_corpus_exits_with_one_clear_line(tmp_path):
    cmd = [sys.executable, "-m", "tinyft", "pretrain", "--corpus", "nope", "--out", str(tmp_path), "--steps", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "error:" in done.stderr and "Traceback" not in done.stderr


# --- finetune --------------------------------------------------------------------------------------------


def run_cli(argv, capsys):
    parser = argparse.ArgumentParser()
    cli.add_finetune_arguments(parser)
    code = cli.run_finetune_cli(parser.parse_args(argv))
    return code, capsys.readouterr().out


def test_cli_end_to_end_prints_a_json_summary_as_the_last_line(pretrained, tmp_path, capsys):
    code, out = run_cli(["--from", pretrained[0], "--strategy", "lora", "--lora-rank", "2", "--steps", "3",
                         "--batch-size", "4", "--n-examples", "60", "--eval-every", "3", "--warmup-steps", "1",
                         "--out", str(tmp_path / "ft"), "--no-progress", "--json"], capsys)
    assert code == 0
    summary = json.loads(out.strip().splitlines()[-1])
    for key in ("strategy", "trainable_params", "total_params", "target_before", "target_after", "wall_s"):
        assert key in summary, key
    assert summary["strategy"] == "lora" and 0 < summary["trainable_params"] < summary["total_params"]
    assert "cost_vs_pretraining" in summary
    meta = checkpoint.load(tmp_path / "ft" / "ckpt.npz").meta["finetune"]
    assert meta["export"] == "adapter" and meta["base_checkpoint"] == os.path.abspath(pretrained[0])
    assert meta["config"]["task"] == "code"


def test_python_m_tinyft_finetune_runs_and_prints_json_last(pretrained, tmp_path):
    cmd = [sys.executable, "-m", "tinyft", "finetune", "--from", pretrained[0], "--strategy", "bitfit", "--steps", "2",
           "--batch-size", "4", "--n-examples", "60", "--eval-every", "2", "--warmup-steps", "1",
           "--out", str(tmp_path), "--no-progress", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["strategy"] == "bitfit" and summary["trainable_params"] < summary["total_params"]


def test_python_m_tinyft_finetune_unknown_strategy_lists_the_valid_ones(pretrained, tmp_path):
    cmd = [sys.executable, "-m", "tinyft", "finetune", "--from", pretrained[0], "--strategy", "magic"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "lora" in done.stderr and "Traceback" not in done.stderr


def test_cli_rejects_a_checkpoint_without_a_tokenizer(tmp_path, capsys):
    checkpoint.save(tmp_path / "bare.npz", tiny_gpt())
    with pytest.raises(ValueError, match="tokenizer"):
        run_cli(["--from", str(tmp_path / "bare.npz"), "--steps", "1", "--out", str(tmp_path)], capsys)


# --- forgetting ------------------------------------------------------------------------------------------


def test_cli_json_last_line_lists_runs_with_gain_and_forgetting(source_run, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    args = ["--from", source_run["path"], "--task", "code", "--strategies", "full,lora", "--lrs", "1e-3",
            "--mitigations", "none", "--steps", "2", "--batch-size", "2", "--out", str(tmp_path), "--json",
            "--no-progress"]
    proc = subprocess.run([sys.executable, "-m", "tinyft", "forgetting", *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["strategy"] for r in summary["runs"]] == ["full", "lora"]
    for row in summary["runs"]:
        assert set(row) >= {"strategy", "lr", "mitigation", "target_gain", "forgetting"}


def test_cli_without_from_says_to_pretrain_first(tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_forgetting_arguments(parser)
    with pytest.raises(ValueError, match="tinyft pretrain"):
        cli.run_forgetting_cli(parser.parse_args(["--out", str(tmp_path)]))


# --- demo ------------------------------------------------------------------------------------------------


def test_cli_engine_demo_prints_json_last():
    done = subprocess.run([sys.executable, "-m", "tinyft", "demo", "--engine", "--json"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["accuracy"] >= 0.99
