"""Your own data as a fine-tuning task (tinyft/tasks.py: text_task, labelled_task, task_from_path,
check_task_vocabulary; tinyft/finetune.py: the task's own name in the checkpoint, no shifted split).

Map of this file:
  1. text_task: splits disjoint and contiguous (read back from numbered lines), sizes from the chunk formula,
     the shortest text that splits, path / folder / text given directly, shifted
  2. the vocabulary check: chess symbols refused by text_task and, for a Task built by hand, by finetune
  3. labelled_task: JSONL and CSV give the same task, stratified counts by hand, label tokens, clashes, errors
  4. finetune on own data: config.task comes from the Task, a task without a shifted split trains and saves
"""

import csv
import json
import re

import numpy as np
import pytest

from tinyft import checkpoint, tasks
from tinyft.autograd import manual_seed
from tinyft.finetune import FinetuneConfig, check_model_fits_task, finetune
from tinyft.nn import GPT, GPTConfig
from tinyft.tokenizers import CharTokenizer

WORDS = ("alpha", "beta", "gamma", "delta", "omega")


def numbered_lines(n):
    """n lines, each naming its number twice: a line cut at a chunk seam and glued to another never reads whole."""
    return "".join(f"line {i:05d} {WORDS[i % 5]} end {i:05d}\n" for i in range(n))


WHOLE_LINE = re.compile(r"line (\d{5}) [a-z]+ end \1\n")


def whole_lines(text):
    return [int(m.group(1)) for m in WHOLE_LINE.finditer(text)]


def quiet(*args, **kwargs):
    pass


# ----------------------------------------------------------------------------------------------------
# 1. text_task
# ----------------------------------------------------------------------------------------------------


def test_text_task_splits_are_disjoint_contiguous_and_lose_nothing():
    text = numbered_lines(3000)
    tok = CharTokenizer.build(text)
    block = 32
    task = tasks.text_task(text, tok, block, seed=3)
    N = len(text)  # a character tokenizer: one id per character
    chunk = max(block + 1, min(4096, N // 20))  # the rule the docstring states, computed here
    n_chunks = N // chunk
    n_val = n_test = max(1, round(0.1 * n_chunks))
    assert len(task.val) == n_val * chunk and len(task.test) == n_test * chunk
    assert len(task.train) + len(task.val) + len(task.test) == N

    lines = {s: whole_lines(tok.decode(getattr(task, s))) for s in ("train", "val", "test")}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(lines[a]) & set(lines[b]), f"{a} and {b} share lines"
    for s, numbers in lines.items():
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), f"{s} is not in text order"
    for s, n_pieces in (("val", n_val), ("test", n_test)):
        breaks = sum(b != a + 1 for a, b in zip(lines[s], lines[s][1:]))
        assert breaks <= n_pieces - 1, f"{s} is not {n_pieces} contiguous pieces"
    # every seam spoils at most one line on each side: nearly every line is whole in exactly one split
    assert sum(len(v) for v in lines.values()) >= 3000 - 2 * n_chunks
    assert task.task_type == "lm" and task.name == "text" and task.shifted is None


def test_text_task_is_seeded():
    text = numbered_lines(2000)
    tok = CharTokenizer.build(text)
    a, b, c = (tasks.text_task(text, tok, 32, seed=s) for s in (0, 0, 1))
    assert np.array_equal(a.val, b.val) and np.array_equal(a.test, b.test)
    assert a.info()["chunks"] != c.info()["chunks"]


def test_text_task_needs_three_windows_and_says_so():
    tok = CharTokenizer.build("ab\n")
    block = 16
    just_enough = ("ab\n" * 100)[:3 * (block + 1)]  # train, val and test: block + 1 tokens each
    task = tasks.text_task(just_enough, tok, block)
    assert len(task.train) == len(task.val) == len(task.test) == block + 1
    x, y = task.eval_arrays("val")
    assert x.shape == (1, block)
    with pytest.raises(ValueError, match=r"too short for block_size=16.*at least 51 tokens"):
        tasks.text_task(just_enough[:-1], tok, block)


def test_text_task_reads_a_file_a_folder_or_the_text(tmp_path):
    text = numbered_lines(400)
    tok = CharTokenizer.build(text)
    (tmp_path / "sql.txt").write_text(text, encoding="utf-8")
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text(text[:8000], encoding="utf-8")
    (folder / "b.md").write_text(text[8000:], encoding="utf-8")
    from_file = tasks.text_task(str(tmp_path / "sql.txt"), tok, 32)
    from_text = tasks.text_task(text, tok, 32)
    assert from_file.name == "sql" and from_text.name == "text"
    assert np.array_equal(from_file.val, from_text.val)
    assert tasks.text_task(tmp_path / "notes", tok, 32).name == "notes"
    assert tasks.text_task(text, tok, 32, name="my lab").name == "my lab"
    with pytest.raises(ValueError, match="no file or folder at 'sq.txt'"):
        tasks.text_task("sq.txt", tok, 32)  # a typo is an error, never a 6-character text


def test_shifted_is_the_other_text_whole():
    text, other = numbered_lines(600), numbered_lines(700)[-3000:]
    tok = CharTokenizer.build(text)
    task = tasks.text_task(text, tok, 32, shifted=other)
    assert np.array_equal(task.shifted, tok.encode(other))
    with pytest.raises(ValueError, match="shifted: .*fewer than block_size"):
        tasks.text_task(text, tok, 32, shifted="line 1\n")


# ----------------------------------------------------------------------------------------------------
# 2. The vocabulary check
# ----------------------------------------------------------------------------------------------------

CHESS = "".join(f"{i}. ♘f3 ♞c6 ♗b5 a6 ♕xd8+ ♚xd8\n" for i in range(1, 200))


def unknown_share(tok, text):
    """The share of `text`'s characters outside the tokenizer's vocabulary, counted here character by character."""
    return sum(ch not in tok.chars for ch in text) / len(text)


def test_text_task_refuses_chess_notation_the_vocabulary_does_not_cover():
    tok = CharTokenizer.build(numbered_lines(100) + "0123456789.+x")
    share = unknown_share(tok, CHESS)
    assert share > 0.05  # the premise: chess pieces and several letters are unknown
    with pytest.raises(ValueError, match=re.escape(f"{share:.1%}") + ".*unknown.*--vocab-extra"):
        tasks.text_task(CHESS, tok, 16)


def test_a_hand_built_task_does_not_skip_the_vocabulary_check():
    tok = CharTokenizer.build(numbered_lines(100) + "0123456789.+x")
    ids = tok.encode(CHESS)
    third = len(ids) // 3
    splits = {"train": ids[:third], "val": ids[third:2 * third], "test": ids[2 * third:], "shifted": None}
    task = tasks.Task("chess", "lm", "loss", tok, 16, splits, 0, {})  # as the lecturer built it
    manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="unknown"):
        check_model_fits_task(model, task)
    with pytest.raises(ValueError, match="unknown"):
        finetune(model, task, FinetuneConfig(steps=1, out=None), progress=False, log=quiet)
    wrong = dict(splits, val=np.full(40, tok.vocab_size + 3))  # ids from another tokenizer
    with pytest.raises(ValueError, match=f"id {tok.vocab_size + 3}, outside"):
        tasks.check_task_vocabulary(tasks.Task("x", "lm", "loss", tok, 16, wrong, 0, {}))


# ----------------------------------------------------------------------------------------------------
# 3. labelled_task
# ----------------------------------------------------------------------------------------------------

COUNTS = {"delete": 17, "insert": 23, "select": 40}  # deliberately unequal


def labelled_rows():
    rows = []
    for label, n in COUNTS.items():
        for i in range(n):
            rows.append({"text": f"{label.upper()} row {i}, from t{i % 3};", "label": label})
    rows.append({"text": 'a "quoted", comma\nand a newline', "label": "select"})  # CSV must keep it whole
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def files(tmp_path):
    rows = labelled_rows()
    write_jsonl(tmp_path / "queries.jsonl", rows)
    write_csv(tmp_path / "queries.csv", rows)
    tok = CharTokenizer.build(json.dumps(rows) + "\n: ABC")
    return tmp_path, rows, tok


def test_labelled_task_from_jsonl_and_csv_are_the_same_stratified_task(files):
    folder, rows, tok = files
    a = tasks.labelled_task(folder / "queries.jsonl", tok, 64, seed=1)
    b = tasks.labelled_task(str(folder / "queries.csv"), tok, 64, seed=1)
    assert a.name == b.name == "queries" and a.task_type == "classification"
    for split in ("train", "val", "test"):
        assert [(e.text, e.label) for e in a._split(split)] == [(e.text, e.label) for e in b._split(split)]
    assert a.classes == ("delete", "insert", "select")  # sorted
    counts = dict(COUNTS, select=COUNTS["select"] + 1)
    for k, label in enumerate(a.classes):
        n = counts[label]
        assert sum(e.label == k for e in a.val) == round(0.1 * n)
        assert sum(e.label == k for e in a.test) == round(0.1 * n)
        assert sum(e.label == k for e in a.train) == n - 2 * round(0.1 * n)
    texts = [e.text for s in ("train", "val", "test") for e in a._split(s)]
    assert sorted(texts) == sorted(r["text"] for r in rows)  # every example once, the multi-line one whole
    assert [int(i) for i in a.label_ids] == [int(tok.encode(w)[0]) for w in ("delete", "insert", "select")]
    e = a.train[0]
    assert e.prompt == e.text + "\nqueries: " and e.answer == a.classes[e.label]
    assert a.shifted is None and a.info()["duplicates_dropped"] == 0


def test_labelled_task_drops_duplicates_and_renames_clashing_labels(tmp_path):
    rows = [{"text": f"great film number {i}", "label": "positive"} for i in range(20)]
    rows += [{"text": f"wait for film number {i}", "label": "pending"} for i in range(20)]
    rows += [{"text": "great film number 3", "label": "pending"}]  # a duplicate text, another label
    write_jsonl(tmp_path / "reviews.jsonl", rows)
    tok = CharTokenizer.build(json.dumps(rows) + "\n: AB")
    task = tasks.labelled_task(tmp_path / "reviews.jsonl", tok, 64)
    info = task.info()
    assert info["duplicates_dropped"] == 1 and info["duplicates_with_another_label"] == 1
    assert info["label_names"] == {"pending": "A", "positive": "B"}  # "p" twice: one token cannot name both
    assert [int(i) for i in task.label_ids] == [int(tok.encode("A")[0]), int(tok.encode("B")[0])]
    assert {e.answer for e in task.train} == {"A", "B"}


@pytest.mark.parametrize("content, suffix, message", [
    ('{"text": "a", "label": "x"}\n{"text": "b", label: "y"}\n', ".jsonl", "line 2: not JSON"),
    ('{"text": "a", "label": "x"}\n{"text": "b"}\n', ".jsonl", "line 2: expected an object with keys"),
    ("sentence,category\nhello,x\n", ".csv", "columns 'text' and 'label'; found 'sentence', 'category'"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n', ".jsonl", "at least two labels"),
    ('{"text": "", "label": "x"}\n', ".jsonl", "line 1: 'text' must be a non-empty string"),
])
def test_bad_labelled_files_are_refused_naming_the_line(tmp_path, content, suffix, message):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(message)):
        tasks.labelled_task(path, CharTokenizer.build(content + "\n: "), 64)


def test_labelled_shifted_must_use_known_labels_and_a_few_examples_leave_val_empty(files):
    folder, rows, tok = files
    write_jsonl(folder / "other.jsonl", [{"text": "DROP TABLE t;", "label": "drop"}])
    with pytest.raises(ValueError, match=r"shifted: labels \['drop'\]"):
        tasks.labelled_task(folder / "queries.jsonl", tok, 64, shifted=folder / "other.jsonl")
    write_jsonl(folder / "other.jsonl", [{"text": "SELECT 1;", "label": "select"}])
    task = tasks.labelled_task(folder / "queries.jsonl", tok, 64, shifted=folder / "other.jsonl")
    assert [e.text for e in task.shifted] == ["SELECT 1;"]
    write_jsonl(folder / "tiny.jsonl", rows[:4] + rows[-4:])  # 4 per class: round(0.4) = 0 for val
    with pytest.raises(ValueError, match="val split empty"):
        tasks.labelled_task(folder / "tiny.jsonl", tok, 64)


def test_task_from_path_decides_by_extension_or_by_labelled(files):
    folder, rows, tok = files
    assert tasks.task_from_path(folder / "queries.csv", tok, 64).task_type == "classification"
    (folder / "queries.txt").write_text((folder / "queries.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    assert tasks.task_from_path(folder / "queries.txt", tok, 16).task_type == "lm"
    assert tasks.task_from_path(folder / "queries.txt", tok, 64, labelled=True).task_type == "classification"


# ----------------------------------------------------------------------------------------------------
# 4. finetune on own data
# ----------------------------------------------------------------------------------------------------


def tiny_gpt(vocab_size, block_size=32):
    manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16))


def test_the_checkpoint_records_the_tasks_own_name_never_a_default(tmp_path):
    text = numbered_lines(400)
    tok = CharTokenizer.build(text)
    task = tasks.text_task(text, tok, 32, name="sql")
    config = FinetuneConfig(steps=2, batch_size=2, eval_every=2, warmup_steps=1, out=str(tmp_path / "ft"))
    assert config.task is None
    result = finetune(tiny_gpt(tok.vocab_size), task, config, progress=False, log=quiet, tokenizer=tok)
    saved = checkpoint.load(result.checkpoint).meta["finetune"]["config"]
    assert saved["task"] == "sql"
    assert set(result.before) == {"val", "test"} and result.summary()["shifted_after"] is None
    with pytest.raises(ValueError, match="config.task is 'code' but the task is 'sql'"):
        finetune(tiny_gpt(tok.vocab_size), task, FinetuneConfig(task="code", steps=1, out=None), progress=False,
                 log=quiet)


def test_a_labelled_task_fine_tunes_with_label_tokens_and_with_a_new_head(files):
    folder, rows, tok = files
    task = tasks.labelled_task(folder / "queries.jsonl", tok, 64, shifted=folder / "queries.csv")
    for classifier in ("label_tokens", "head"):
        config = FinetuneConfig(steps=2, batch_size=4, eval_every=2, warmup_steps=1, classifier=classifier, out=None)
        result = finetune(tiny_gpt(tok.vocab_size, 64), task, config, progress=False, log=quiet)
        assert result.metric == "accuracy" and set(result.after) == {"val", "test", "shifted"}
        assert result.after["test"]["n"] == len(task.test)
