"""own_data: your own data as a fine-tuning task: a text to model, or labelled examples to classify.

Map of this file:
  text_task(path_or_text, ...)   a language-modelling Task on your text, cut into seeded contiguous chunks
                                 (no window crosses a split); an optional shifted text as the shifted split
  read_labelled, labelled_task   JSONL ({"text", "label"} per line) or CSV (text,label) -> a classification
                                 Task with seeded, stratified val / test splits, prompts "text\n<name>: "
  task_from_path(path, ...)      what `finetune --data PATH` and `forgetting --data PATH` build (by extension)
Both check that the checkpoint's vocabulary covers the text, as the built-in tasks do (tasks.py).
"""

import csv
import io
import json
import os
import pathlib

import numpy as np

from . import data
from .tasks import (
    Example,
    SPLITS,
    Task,
    _check_vocabulary,
    _first_token_labels,
    _pad_id,
)

OWN_CHUNK_MAX = 4096  # text_task: tokens per chunk at most (as data.train_val_split) ...
OWN_MIN_CHUNKS = 20  # ... and fewer tokens for a short text, so that it still gives about 20 chunks
LABELLED_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}  # task_from_path: by extension
MAPPED_LABEL_NAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # labels whose first tokens clash are renamed A, B, C, ...


def _read_own_text(path_or_text, argument):
    """(text, name) of a file or folder (name: the file's stem or the folder's name), or (text, None) of text
    given directly: a str is text when it holds a newline or is longer than 255 characters, else a path."""
    if isinstance(path_or_text, os.PathLike):
        path = os.fspath(path_or_text)
    elif isinstance(path_or_text, str):
        if "\n" in path_or_text or len(path_or_text) > 255:
            return path_or_text, None
        path = path_or_text
    else:
        raise ValueError(f"{argument} must be a path (str or pathlib.Path) or the text itself (a str with a "
                         f"newline), got {type(path_or_text).__name__}")
    if not os.path.exists(path):
        raise ValueError(f"{argument}: no file or folder at {path!r}; pass an existing path, or the text itself "
                         "(a string holding a newline, or longer than 255 characters)")
    text = data.load_text(path)  # a folder: its .txt/.md/.py files joined; errors name the file
    source = pathlib.Path(os.path.abspath(path))
    return text, (source.stem if source.is_file() else source.name)


def _own_task_name(name, from_path, default):
    name = (from_path or default) if name is None else name
    if not isinstance(name, str) or not name.strip() or "\n" in name:
        raise ValueError(f"name must be a non-empty one-line string (the task's name, recorded in checkpoints), "
                         f"got {name!r}")
    return name


def _check_own_arguments(tokenizer, block_size, val_fraction, test_fraction):
    if not callable(getattr(tokenizer, "encode", None)) or not hasattr(tokenizer, "vocab_size"):
        raise ValueError(f"tokenizer must have encode() and vocab_size, got {type(tokenizer).__name__}")
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 2:
        raise ValueError(f"block_size must be an int >= 2, got {block_size!r}")
    for argument, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise ValueError(f"{argument} must be a number between 0 and 1 (exclusive), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be below 1 (the rest is train), got "
                         f"{val_fraction} + {test_fraction}")


def _common_meta(name, task_type, tokenizer, block_size, seed, pad):
    return {"name": name, "block_size": int(block_size), "seed": seed, "pad_id": pad, "task_type": task_type,
            "tokenizer": f"{type(tokenizer).__name__}(vocab_size={tokenizer.vocab_size})"}


def text_task(path_or_text, tokenizer, block_size, val_fraction=0.1, test_fraction=0.1, shifted=None, seed=0,
              name=None):
    """A language-modelling Task on your own text: a file, a folder of text files (data.load_text), or the text.

    Splits by whole contiguous chunks, as data.train_val_split: the ids are cut into chunks of
    min(4096, N // 20) tokens (at least block_size + 1, so every split holds a whole window); a seeded draw
    gives round(val_fraction * chunks) of them (at least 1) to val and as many by test_fraction to test; the
    rest, and the short tail, are train. Each split is its chunks joined in text order, so no window ever
    holds tokens of two splits (a window may span the seam between two chunks of the same split).
    shifted  an optional second file, folder or text: the shifted split (the same kind of text from elsewhere,
             measured but never trained on); without it the task has no shifted split (task.shifted is None)
    name     the task's name, recorded in fine-tuned checkpoints (default: the file's stem, or "text")
    The same vocabulary check as build_task: more than 5% of the tokens <unk> is a ValueError. info() holds
    the chunk size and which chunks went to val and test.
    """
    _check_own_arguments(tokenizer, block_size, val_fraction, test_fraction)
    block_size = int(block_size)
    text, stem = _read_own_text(path_or_text, "path_or_text")
    name = _own_task_name(name, stem, "text")
    ids = tokenizer.encode(text)  # (N,) int64
    shifted_ids, shifted_name = None, None
    if shifted is not None:
        shifted_text, shifted_name = _read_own_text(shifted, "shifted")
        shifted_ids = tokenizer.encode(shifted_text)
        if len(shifted_ids) < block_size + 1:
            raise ValueError(f"shifted: the text has {len(shifted_ids)} tokens, fewer than block_size + 1 = "
                             f"{block_size + 1} (one evaluation window); use a longer text or a smaller block size")
    unknown = _check_vocabulary(tokenizer, [ids] if shifted_ids is None else [ids, shifted_ids], name)

    chunk_size = max(block_size + 1, min(OWN_CHUNK_MAX, len(ids) // OWN_MIN_CHUNKS))
    n_chunks = len(ids) // chunk_size
    n_val, n_test = max(1, round(val_fraction * n_chunks)), max(1, round(test_fraction * n_chunks))
    if n_chunks - n_val - n_test < 1:
        raise ValueError(f"task {name!r}: the text has {len(ids)} tokens, too short for block_size={block_size}: "
                         f"train, val and test each need at least one chunk of block_size + 1 = {block_size + 1} "
                         f"tokens (at least {3 * (block_size + 1)} tokens in all, more with larger val/test "
                         "fractions); use a longer text or a smaller block size")
    order = np.random.default_rng(seed).permutation(n_chunks)
    chunks = {"val": sorted(order[:n_val].tolist()), "test": sorted(order[n_val:n_val + n_test].tolist())}
    chunks["train"] = sorted(order[n_val + n_test:].tolist())

    def joined(numbers):
        return np.concatenate([ids[c * chunk_size:(c + 1) * chunk_size] for c in numbers])

    splits = {s: joined(chunks[s]) for s in ("train", "val", "test")}
    splits["train"] = np.concatenate([splits["train"], ids[n_chunks * chunk_size:]])  # the short tail
    splits["shifted"] = shifted_ids
    pad = _pad_id(tokenizer)
    meta = {
        **_common_meta(name, "lm", tokenizer, block_size, seed, pad),
        "source": os.fspath(path_or_text) if stem is not None else "text given directly",
        "characters": len(text), "chunk_size": chunk_size, "n_chunks": n_chunks,
        "chunks": {"val": chunks["val"], "test": chunks["test"]},
        "tokens": {s: (0 if a is None else len(a)) for s, a in splits.items()},
        "windows": {s: (0 if a is None else (len(a) - 1) // block_size) for s, a in splits.items()},
        "n_examples": (len(splits["train"]) - 1) // block_size,
        "shifted": (os.fspath(shifted) if shifted_name is not None else "text given directly")
        if shifted is not None else None,
        "splits": f"the text's {len(ids)} tokens are cut into {n_chunks} chunks of {chunk_size}; a seeded draw "
                  f"gives {n_val} to val and {n_test} to test, the other {n_chunks - n_val - n_test} and the "
                  f"{len(ids) - n_chunks * chunk_size}-token tail are train; each split keeps text order",
        "unknown_fraction": unknown,
    }
    task = Task(name, "lm", "loss", tokenizer, block_size, splits, pad, meta)
    task._meta["metric"], task._meta["higher_is_better"] = task.metric, task.higher_is_better
    return task


def read_labelled(path, text_key="text", label_key="label"):
    """[(text, label, where)] from a file of labelled examples; label a str, where "line N" or "row N".

    JSONL  one JSON object per line, e.g. {"text": "The film was a delight.", "label": "positive"}; blank lines
           are skipped; an int label becomes its str
    CSV    a header row naming the columns (text,label and any others), then one example per row (the standard
           library's csv module: quoted fields may hold commas and newlines)
    The format follows the extension (.csv is CSV, .jsonl/.json JSONL); any other is JSONL when its first
    character (after white space) is "{", else CSV. Errors name the line or row.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise ValueError(f"path: no file at {path!r}; expected a .jsonl or .csv file of labelled examples")
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: a spreadsheet's byte-order mark
            content = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    kind = LABELLED_FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        kind = "jsonl" if content.lstrip().startswith("{") else "csv"
    rows = []

    def add(text, label, where):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}, {where}: {text_key!r} must be a non-empty string, got {text!r}")
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise ValueError(f"{path}, {where}: {label_key!r} must be a string (or an int), got {label!r}")
        label = str(label).strip()
        if not label or "\n" in label:
            raise ValueError(f"{path}, {where}: {label_key!r} must be a non-empty one-line label, got {label!r}")
        rows.append((text, label, where))

    if kind == "jsonl":
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{path}, line {number}: not JSON ({err.msg}); a JSONL file holds one object per "
                                 'line, e.g. {"text": "...", "label": "..."}') from None
            if not isinstance(record, dict) or text_key not in record or label_key not in record:
                raise ValueError(f"{path}, line {number}: expected an object with keys {text_key!r} and "
                                 f"{label_key!r}, got {line.strip()[:80]!r}")
            add(record[text_key], record[label_key], f"line {number}")
    else:
        reader = csv.DictReader(io.StringIO(content, newline=""))
        columns = reader.fieldnames or []
        if text_key not in columns or label_key not in columns:
            raise ValueError(f"{path}: a CSV file needs a header row with the columns {text_key!r} and "
                             f"{label_key!r}; found {', '.join(map(repr, columns)) or 'no header'}")
        for number, record in enumerate(reader, start=2):
            add(record[text_key], record[label_key], f"row {number}")
    if not rows:
        raise ValueError(f"{path}: holds no examples")
    return rows


def _label_names(tokenizer, classes, name):
    """(names, label_ids): the label words themselves when their first tokens are known and distinct, else
    the single-token names A, B, C, ... in class order; ValueError when neither fits the vocabulary."""
    try:
        return list(classes), _first_token_labels(tokenizer, classes, name)
    except ValueError as err:
        reason = str(err)
    if len(classes) > len(MAPPED_LABEL_NAMES):
        raise ValueError(f"task {name!r}: {reason}; and {len(classes)} classes are too many to rename A-Z: "
                         "give the labels words with distinct first characters")
    names = list(MAPPED_LABEL_NAMES[:len(classes)])
    unk = getattr(tokenizer, "unk_id", None)
    ids = [tokenizer.encode(n) for n in names]
    if any(len(i) != 1 or i[0] == unk for i in ids) or len({int(i[0]) for i in ids}) != len(names):
        raise ValueError(f"task {name!r}: {reason}; and the names {', '.join(names)} are not single known tokens "
                         "either: give the labels words with distinct, known first characters")
    return names, [int(i[0]) for i in ids]


def labelled_task(path, tokenizer, block_size, val_fraction=0.1, test_fraction=0.1, shifted=None, seed=0,
                  name=None, text_key="text", label_key="label"):
    """A classification Task on your own labelled examples (a JSONL or CSV file: read_labelled).

    Classes are the distinct labels, sorted. Each prompt is text + "\\n<name>: " (as the "kind" task's
    "\\nkind: "), and the answer is the label word: its first token names the class, so the labels' first
    tokens must be known and distinct; when they are not (e.g. "positive" and "pending"), the classes are
    renamed A, B, C, ... (info()["label_names"] says which is which). An exact duplicate text is kept once.
    Splits are stratified and seeded: each class gives round(val_fraction * its count) examples to val and
    round(test_fraction * its count) to test, the rest to train. shifted: another labelled file with the same
    labels (examples from elsewhere), measured but never trained on; without it task.shifted is None.
    The same vocabulary check as build_task. name: default the file's stem.
    """
    _check_own_arguments(tokenizer, block_size, val_fraction, test_fraction)
    block_size = int(block_size)
    rows = read_labelled(path, text_key, label_key)
    name = _own_task_name(name, pathlib.Path(os.fspath(path)).stem, "labelled")
    first, conflicts = {}, 0  # text -> its first (label, where)
    for text, label, where in rows:
        if text in first:
            conflicts += first[text][0] != label
            continue
        first[text] = (label, where)
    classes = sorted({label for label, _ in first.values()})
    if len(classes) < 2:
        raise ValueError(f"{path}: every example has the label {classes[0]!r}; a classification task needs at "
                         "least two labels")
    names, label_ids = _label_names(tokenizer, classes, name)
    suffix = f"\n{name}: "
    if len(tokenizer.encode(suffix)) + 2 > block_size:
        raise ValueError(f"block_size={block_size} is too small for task {name!r}: the prompt's ending {suffix!r} "
                         "and the label need more tokens; pass a larger block size or a shorter name")
    index = {c: k for k, c in enumerate(classes)}

    def example(text, label, where):
        k = index[label]
        return Example(text, text + suffix, names[k], k, where)

    rng = np.random.default_rng(seed)
    splits = {s: [] for s in SPLITS}
    per_class = {}
    for c in classes:
        items = [(t, lab, w) for t, (lab, w) in first.items() if lab == c]  # file order
        items = [items[i] for i in rng.permutation(len(items))]
        n_val, n_test = round(val_fraction * len(items)), round(test_fraction * len(items))
        n_val, n_test = min(n_val, max(len(items) - 1, 0)), min(n_test, max(len(items) - 1 - n_val, 0))
        splits["val"] += [example(*item) for item in items[:n_val]]
        splits["test"] += [example(*item) for item in items[n_val:n_val + n_test]]
        splits["train"] += [example(*item) for item in items[n_val + n_test:]]
        per_class[c] = {"train": len(items) - n_val - n_test, "val": n_val, "test": n_test}
    for s in ("val", "test"):
        if not splits[s]:
            raise ValueError(f"{path}: {len(first)} distinct examples in {len(classes)} classes leave the {s} split "
                             f"empty at {s}_fraction={val_fraction if s == 'val' else test_fraction} (each class "
                             f"gives round(fraction x its count)); use more examples or a larger {s}_fraction")
    if shifted is None:
        splits["shifted"] = None
    else:
        shifted_rows = read_labelled(shifted, text_key, label_key)
        unknown_labels = sorted({lab for _, lab, _ in shifted_rows} - set(classes))
        if unknown_labels:
            raise ValueError(f"shifted: labels {unknown_labels} are not among the task's labels {classes}")
        splits["shifted"] = [example(*row) for row in shifted_rows]
    for s in SPLITS:  # interleave the classes
        if splits[s] is not None:
            splits[s] = [splits[s][i] for i in rng.permutation(len(splits[s]))]
    prompts = [tokenizer.encode(e.prompt) for s in SPLITS if splits[s] is not None for e in splits[s]]
    unknown = _check_vocabulary(tokenizer, prompts, name)
    clean = np.array([e.label for e in splits["train"]], dtype=np.int64)
    pad = _pad_id(tokenizer)
    meta = {
        **_common_meta(name, "classification", tokenizer, block_size, seed, pad),
        "source": os.fspath(path), "classes": classes, "label_names": dict(zip(classes, names)),
        "label_ids": label_ids, "prompt_suffix": suffix,
        "sizes": {s: (None if splits[s] is None else len(splits[s])) for s in SPLITS},
        "class_counts": per_class, "class_counts_train": np.bincount(clean, minlength=len(classes)).tolist(),
        "n_examples": len(splits["train"]), "examples_read": len(rows),
        "duplicates_dropped": len(rows) - len(first), "duplicates_with_another_label": conflicts,
        "longest_prompt_tokens": max(len(p) for p in prompts),
        "prompts_cut": sum(len(p) + 1 > block_size for p in prompts),
        "shifted": os.fspath(shifted) if shifted is not None else None,
        "splits": f"stratified, seed {seed}: each class gives round({val_fraction} x its count) examples to val, "
                  f"round({test_fraction} x its count) to test, the rest to train",
        "unknown_fraction": unknown,
    }
    task = Task(name, "classification", "accuracy", tokenizer, block_size, splits, pad, meta)
    task.classes, task.label_ids, task.train_clean_labels = tuple(classes), np.array(label_ids, np.int64), clean
    task.prompt_suffix = suffix
    task._meta["metric"], task._meta["higher_is_better"] = task.metric, task.higher_is_better
    return task


def task_from_path(path, tokenizer, block_size, shifted=None, labelled=None, seed=0, val_fraction=0.1,
                   test_fraction=0.1, name=None):
    """The task `--data PATH` builds: labelled_task for labelled examples, else text_task.

    labelled  None: decide by the extension (.jsonl, .json and .csv are labelled examples); True or False: say so
    """
    if labelled is None:
        labelled = isinstance(path, (str, os.PathLike)) and \
            os.path.splitext(os.fspath(path))[1].lower() in LABELLED_FORMATS and os.path.isfile(path)
    build = labelled_task if labelled else text_task
    return build(path, tokenizer, block_size, val_fraction=val_fraction, test_fraction=test_fraction,
                 shifted=shifted, seed=seed, name=name)
