"""The command line for your own data and the way out (tinyft/cli.py): a lecturer's text file goes pretrain ->
finetune --data -> forgetting --data with no Python written; labelled JSONL/CSV; --task order; pretrain
--init-from / --vocab-extra / --gelu / --sample-prompt; export and import. Bad input: one line, exit code 2.
"""

import csv
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyft import checkpoint, cli
from tinyft.pretrain import PretrainConfig, pretrain

REPO = Path(cli.__file__).resolve().parent.parent
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "8"]


def quiet(*args, **kwargs):
    pass


def queries(n, seed):
    """Synthetic SQL, one query a line: the kind of file a lecturer brings."""
    rng = random.Random(seed)
    return "".join(f"SELECT {rng.choice(['id', 'name', 'price', 'qty'])} FROM {rng.choice(['users', 'orders', 'items'])}"
                   f" WHERE {rng.choice(['id', 'qty'])} > {rng.randint(1, 99)};\n" for _ in range(n))


def labelled(n, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind, table = rng.choice(["select", "insert", "delete"]), rng.choice(["users", "orders", "items"])
        text = {"select": f"SELECT id FROM {table} WHERE id > {i};", "insert": f"INSERT INTO {table} VALUES ({i}, 'x');",
                "delete": f"DELETE FROM {table} WHERE id = {i};"}[kind]
        rows.append({"text": text, "label": kind})
    return rows


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A lecturer's folder: corpus.txt (pretraining), sql.txt (fine-tuning), kinds.jsonl / kinds.csv (labelled),
    chess.txt (characters the vocabulary lacks), and base/ckpt.npz pretrained 60 steps on corpus.txt."""
    folder = tmp_path_factory.mktemp("lab")
    (folder / "corpus.txt").write_text(queries(1500, 0), encoding="utf-8")
    (folder / "sql.txt").write_text(queries(800, 1), encoding="utf-8")
    (folder / "sql_shifted.txt").write_text(queries(200, 2).lower(), encoding="utf-8")
    rows = labelled(300, 3)
    (folder / "kinds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with open(folder / "kinds.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    (folder / "chess.txt").write_text("".join("♘f3 ♞c6 ♗b5 a6\n" for _ in range(300)), encoding="utf-8")
    config = PretrainConfig(corpus=str(folder / "corpus.txt"), n_layer=1, n_head=2, n_embd=32, block_size=32,
                            batch_size=8, lr=1e-2, min_lr=1e-3, warmup_steps=3, steps=60, eval_every=60,
                            eval_batches=2, sample_tokens=5, out=str(folder / "base"))
    pretrain(config, progress=False, log=quiet)
    return folder


def main(argv, capsys):
    """cli.main in this process: (exit code, standard output, standard error)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def shell(*argv):
    """`python -m tinyft ...` in a new process, with this repository's tinyft."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "tinyft", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


# ----------------------------------------------------------------------------------------------------
# The lecturer's flow, on the command line only
# ----------------------------------------------------------------------------------------------------


def test_a_lecturers_text_goes_pretrain_finetune_forgetting_on_the_command_line(tmp_path):
    (tmp_path / "corpus.txt").write_text(queries(1500, 10), encoding="utf-8")
    (tmp_path / "sql.txt").write_text(queries(800, 11), encoding="utf-8")
    out = shell("pretrain", "--corpus", tmp_path / "corpus.txt", *TINY, "--steps", "60", "--lr", "1e-2",
                "--warmup-steps", "3", "--eval-every", "60", "--sample-prompt", "SELECT", "--out", tmp_path / "base",
                "--no-progress", "--json")
    base = last_json(out)["checkpoint"]
    assert "sample:\nSELECT" in out
    out = shell("finetune", "--from", base, "--data", tmp_path / "sql.txt", "--steps", "30", "--lr", "3e-3",
                "--batch-size", "8", "--eval-every", "30", "--warmup-steps", "2", "--out", tmp_path / "ft",
                "--no-progress", "--json")
    ft = last_json(out)
    assert ft["task"] == "sql" and ft["metric"] == "loss" and ft["shifted_after"] is None
    assert ft["target_after"] < ft["target_before"] and ft["val_after"] < ft["val_before"]  # it learned the file
    assert checkpoint.load(ft["checkpoint"]).meta["finetune"]["config"]["task"] == "sql"
    out = shell("forgetting", "--from", base, "--data", tmp_path / "sql.txt", "--strategies", "full,lora", "--lrs",
                "3e-3", "--mitigations", "none", "--steps", "5", "--batch-size", "4", "--out", tmp_path / "fg",
                "--no-progress", "--json")
    sweep = last_json(out)
    assert sweep["task"] == "sql" and [r["strategy"] for r in sweep["runs"]] == ["full", "lora"]
    assert all(np.isfinite(r["forgetting"]) and np.isfinite(r["target_gain"]) for r in sweep["runs"])
    assert json.loads((tmp_path / "fg" / "runs.json").read_text())["settings"]["task"] == "sql"


def test_finetune_data_learns_labelled_jsonl_and_reads_the_same_csv(lab, tmp_path, capsys):
    base = lab / "base" / "ckpt.npz"
    code, out, _ = main(["finetune", "--from", base, "--data", lab / "kinds.jsonl", "--steps", "30", "--lr", "3e-3",
                         "--batch-size", "8", "--eval-every", "30", "--warmup-steps", "2", "--out", tmp_path / "j",
                         "--no-progress", "--json"], capsys)
    s = last_json(out)
    assert code == 0 and s["task"] == "kinds" and s["task_type"] == "classification" and s["metric"] == "accuracy"
    assert s["target_after"] > s["target_before"]
    code, out, _ = main(["finetune", "--from", base, "--data", lab / "kinds.csv", "--shifted-data", lab / "kinds.jsonl",
                         "--steps", "1", "--batch-size", "2", "--eval-every", "1", "--warmup-steps", "0", "--out",
                         tmp_path / "c", "--no-progress", "--json"], capsys)
    assert code == 0 and last_json(out)["shifted_after"] is not None and "shifted" in out


def test_labels_reads_a_txt_file_as_labelled_examples(lab, tmp_path, capsys):
    (tmp_path / "kinds.txt").write_text((lab / "kinds.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    common = ["finetune", "--from", lab / "base" / "ckpt.npz", "--data", tmp_path / "kinds.txt", "--steps", "1",
              "--batch-size", "2", "--eval-every", "1", "--warmup-steps", "0", "--no-progress", "--json"]
    assert last_json(main([*common, "--out", tmp_path / "a"], capsys)[1])["task_type"] == "lm"
    assert last_json(main([*common, "--labels", "--out", tmp_path / "b"], capsys)[1])["task_type"] == "classification"


@pytest.mark.parametrize("command, extra, message", [
    ("finetune", ["--task", "kind", "--data", "DATA"], "--task kind and --data are mutually exclusive"),
    ("finetune", ["--shifted-data", "DATA"], "--shifted-data needs --data PATH"),
    ("finetune", ["--labels"], "--labels needs --data PATH"),
    ("finetune", ["--data", "DATA", "--label-noise", "0.2"], "--label-noise applies to the built-in"),
    ("finetune", ["--data", "CHESS"], "vocabulary does not fit"),
    ("finetune", ["--data", "sq.txt"], "no file or folder at 'sq.txt'"),
    ("forgetting", ["--task", "code", "--data", "DATA"], "--task code and --data are mutually exclusive"),
    ("forgetting", ["--data", "CHESS"], "vocabulary does not fit"),
])
def test_bad_task_arguments_are_one_line_and_exit_code_2(lab, tmp_path, capsys, command, extra, message):
    extra = [{"DATA": lab / "sql.txt", "CHESS": lab / "chess.txt"}.get(a, a) for a in extra]
    code, _, err = main([command, "--from", lab / "base" / "ckpt.npz", *extra, "--out", tmp_path / "x"], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x" / "ckpt.npz").exists() and not (tmp_path / "x" / "runs.json").exists()


def test_task_order_works_for_finetune_and_forgetting(lab, tmp_path, capsys):
    base = lab / "base" / "ckpt.npz"
    code, out, _ = main(["finetune", "--from", base, "--task", "order", "--steps", "1", "--batch-size", "2",
                         "--n-examples", "20", "--eval-every", "1", "--warmup-steps", "0", "--out", tmp_path / "ft",
                         "--no-progress", "--json"], capsys)
    assert code == 0 and last_json(out)["task"] == "order" and last_json(out)["metric"] == "accuracy"
    assert checkpoint.load(tmp_path / "ft" / "ckpt.npz").meta["finetune"]["config"]["task"] == "order"
    code, out, _ = main(["forgetting", "--from", base, "--task", "order", "--strategies", "full", "--lrs", "1e-3",
                         "--mitigations", "none", "--steps", "1", "--batch-size", "2", "--out", tmp_path / "fg",
                         "--no-progress", "--json"], capsys)
    assert code == 0 and last_json(out)["task"] == "order" and last_json(out)["runs"][0]["metric"] == "accuracy"


# ----------------------------------------------------------------------------------------------------
# pretrain: --init-from, --vocab-extra, --gelu, --sample-prompt
# ----------------------------------------------------------------------------------------------------


def test_pretrain_init_from_with_vocab_extra_continues_on_new_characters(lab, tmp_path, capsys):
    base = lab / "base" / "ckpt.npz"
    base_vocab = checkpoint.load(base).meta["tokenizer"]["chars"]
    code, out, _ = main(["pretrain", "--init-from", base, "--corpus", lab / "chess.txt", "--vocab-extra",
                         lab / "chess.txt", "--steps", "2", "--warmup-steps", "0", "--eval-every", "2",
                         "--batch-size", "4", "--sample-prompt", "♘f", "--out", tmp_path / "c", "--no-progress",
                         "--json"], capsys)
    s = last_json(out)
    new = set("♘♞♗") - set(base_vocab)
    assert code == 0 and s["init_from"] == str(base) and s["vocab_size"] == len(base_vocab) + 1 + len(new)
    assert "sample:\n♘f" in out
    saved = checkpoint.load(tmp_path / "c" / "ckpt.npz")
    assert saved.config["n_layer"] == 1 and saved.config["n_embd"] == 32  # the checkpoint's, not the defaults


@pytest.mark.parametrize("extra, message", [
    (["--n-layer", "3"], "checkpoint has n_layer=1, but this run asks for n_layer=3"),
    (["--gelu", "exact"], "checkpoint has gelu='tanh', but this run asks for gelu='exact'"),
    (["--corpus", "CHESS"], "--vocab-extra"),
    (["--corpus", "DATA", "--tokenizer", "bpe"], "checkpoint has tokenizer='char'"),
    (["--corpus", "DATA", "--sample-prompt", "♘"], "sample_prompt '♘' holds characters"),
])
def test_pretrain_init_from_refuses_in_one_line(lab, tmp_path, capsys, extra, message):
    extra = [{"DATA": lab / "sql.txt", "CHESS": lab / "chess.txt"}.get(a, a) for a in extra]
    code, _, err = main(["pretrain", "--init-from", lab / "base" / "ckpt.npz", *extra, "--steps", "1",
                         "--warmup-steps", "0", "--out", tmp_path / "x", "--no-progress"], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x" / "ckpt.npz").exists()


def test_pretrain_gelu_exact_is_saved_in_the_checkpoint(lab, tmp_path, capsys):
    code, _, _ = main(["pretrain", "--corpus", lab / "sql.txt", *TINY, "--gelu", "exact", "--steps", "1",
                       "--warmup-steps", "0", "--eval-every", "1", "--out", tmp_path / "e", "--no-progress"], capsys)
    assert code == 0 and checkpoint.load(tmp_path / "e" / "ckpt.npz").config["gelu"] == "exact"


# ----------------------------------------------------------------------------------------------------
# export and import
# ----------------------------------------------------------------------------------------------------


def test_export_safetensors_then_import_round_trips_bit_exactly_and_finetunes(lab, tmp_path, capsys):
    base = lab / "base" / "ckpt.npz"
    code, out, _ = main(["export", "--from", base, "--format", "safetensors", "--out", tmp_path / "m.safetensors",
                         "--json"], capsys)
    s = last_json(out)
    assert code == 0 and s["format"] == "safetensors" and s["files"] == [str(tmp_path / "m.safetensors")]
    assert "note: " in out and "exact GELU" in out  # a tanh model: nanoGPT's logits would differ, and it says so
    code, out, _ = main(["import", "--from", tmp_path / "m.safetensors", "--out", tmp_path / "back", "--json"], capsys)
    s = last_json(out)
    assert code == 0 and s["checkpoint"] == str(tmp_path / "back" / "ckpt.npz")
    before, after = checkpoint.load(base), checkpoint.load(s["checkpoint"])
    assert set(after.model_state) == set(before.model_state)
    for name, array in before.model_state.items():
        assert after.model_state[name].dtype == array.dtype and np.array_equal(after.model_state[name], array), name
    assert after.config == before.config and after.meta["tokenizer"] == before.meta["tokenizer"]
    code, out, _ = main(["finetune", "--from", s["checkpoint"], "--data", lab / "sql.txt", "--steps", "1",
                         "--batch-size", "2", "--eval-every", "1", "--warmup-steps", "0", "--out", tmp_path / "ft",
                         "--no-progress", "--json"], capsys)
    assert code == 0 and last_json(out)["task"] == "sql"


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="PyTorch is installed: export works")
def test_export_nanogpt_without_torch_says_pip_install_torch(lab, tmp_path, capsys):
    code, _, err = main(["export", "--from", lab / "base" / "ckpt.npz", "--format", "nanogpt", "--out",
                         tmp_path / "out-tinyft"], capsys)
    assert code == 2 and err.count("\n") == 1 and "pip install torch" in err and "Traceback" not in err
    assert not (tmp_path / "out-tinyft").exists()


def test_export_and_import_errors_are_one_line_naming_the_flags(lab, tmp_path, capsys):
    base = lab / "base" / "ckpt.npz"
    cases = [
        (["export", "--from", tmp_path / "nope.npz", "--format", "safetensors", "--out", tmp_path / "a.safetensors"],
         "--from"),
        (["export", "--from", base, "--format", "safetensors", "--out", base], "is the input file"),
        (["export", "--from", base, "--format", "safetensors", "--out", tmp_path / "a.safetensors", "--dataset", "x"],
         "--dataset applies to --format nanogpt only"),
        (["import", "--from", base, "--out", tmp_path / "i"], "already a tinyft checkpoint"),
    ]
    for argv, message in cases:
        code, _, err = main(argv, capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    target = tmp_path / "m.safetensors"
    assert main(["export", "--from", base, "--format", "safetensors", "--out", target], capsys)[0] == 0
    code, _, err = main(["export", "--from", base, "--format", "safetensors", "--out", target], capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert main(["export", "--from", base, "--format", "safetensors", "--out", target, "--overwrite"], capsys)[0] == 0


@pytest.mark.parametrize("command, words", [
    ("export", ["nanoGPT", "safetensors", "PyTorch", "--overwrite", "--format", "writes over its input"]),
    ("import", ["ckpt.pt", "weights_only", "_orig_mod.", "finetune --from", "--vocab"]),
])
def test_help_explains_export_and_import(command, words, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert done.value.code == 0
    for word in words:
        assert word in text, word
