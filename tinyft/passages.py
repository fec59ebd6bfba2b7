"""passages: the raw text each built-in task is cut from, before any tokenizer (tasks.py builds the tasks).

Map of this file:
  cut_passages, word_passages   cut a document into passages of lo..hi characters
  source_parts                  a module's source -> its docstrings, comment blocks and code
  kind_pool                     every passage of the "kind" task, by class, in- and out-of-distribution
  describe_pairs                (qualified name, one-line docstring) pairs of the held-out modules
  order_pool, shuffle_words     the "order" task's passages (text pretraining never trains on) and their shuffles
Every pool reads the frozen corpus snapshot (data.python_text), so it is the same on every Python; live=True
reads the running interpreter instead. Pools are built once per process.
"""

import ast
import re

import numpy as np

from . import data

# "kind": classes in this order (class 0 is the majority when imbalance > 1). Each label word starts with
# its own letter, so one token - the label's first - names the class.
KIND_CLASSES = ("prose", "docstring", "source", "comment")
KIND_LENGTHS = (64, 120)  # characters per passage in train / val / test
KIND_SHIFTED_LENGTHS = (32, 63)  # shorter passages in shifted
KIND_SHIFTED_EVERY = 5  # topics and modules at sorted positions 4, 9, 14, ... feed only the shifted split

# "order": is this passage in its real word order, or are the same words shuffled? Both classes hold exactly
# the same characters, so only knowledge of the language can tell them apart. Passages come from text the
# default pretraining never trains on: the broad corpus's validation region (the chunks that
# data.train_val_split gives to validation with ORDER_PRETRAIN_SEED, as pretraining does with a
# character tokenizer and that seed) and the held-out modules' docstrings. Shifted: code comments.
ORDER_LENGTHS = (60, 100)  # characters per passage (the whole passage + suffix + label fits block 128)
ORDER_MIN_WORDS = 8
ORDER_MIN_LETTER_SHARE = 0.85  # letters and spaces: prose, not code or tables
ORDER_PRETRAIN_SEED = 0  # the pretraining seed whose validation region feeds the task

_CACHE = {}  # pools of raw text: built once per process


# ----------------------------------------------------------------------------------------------
# Raw text pools (no tokenizer involved)


def cut_passages(text, lo, hi, rng):
    """Consecutive, non-overlapping passages of lo..hi characters, cut at whitespace, stripped.

    Each passage draws its target length from rng; a piece shorter than lo (a document's tail) is dropped.
    """
    passages, pos, n = [], 0, len(text)
    while pos < n:
        while pos < n and text[pos].isspace():
            pos += 1
        end = pos + int(rng.integers(lo, hi + 1))
        if end >= n:
            piece, pos = text[pos:], n
        else:
            cut = max(text.rfind(" ", pos + lo, end + 1), text.rfind("\n", pos + lo, end + 1))
            cut = end if cut == -1 else cut
            piece, pos = text[pos:cut], cut
        piece = piece.strip()
        if lo <= len(piece) <= hi:
            passages.append(piece)
    return passages


def source_parts(source):
    """(docstrings, comment blocks, code text) of one module's source.

    docstrings  ast.get_docstring of the module and of every class and function (inspect.cleandoc'ed)
    comments    runs of comment-only lines, the leading '#' marks removed (so the class is told by its
                words, not by one character); a '#' line inside a non-docstring multi-line string would
                be read as a comment (rare)
    code        every other non-blank line: the source without docstrings and comment-only lines
    """
    tree = ast.parse(source)
    docstrings, doc_lines = [], set()
    stack = [tree]
    while stack:  # descend only through statement bodies: much cheaper than ast.walk
        node = stack.pop()
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                docstrings.append(doc)
                first = body[0]
                doc_lines.update(range(first.lineno, first.end_lineno + 1))
        for child in body:
            stack.append(child)
            for field in ("orelse", "finalbody", "handlers"):
                stack.extend(getattr(child, field, None) or [])
    comments, code, block = [], [], []
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if number not in doc_lines and stripped.startswith("#"):
            block.append(re.sub(r"^#+\s?", "", stripped))
            continue
        if block:
            comments.append("\n".join(block))
            block = []
        if number not in doc_lines and stripped:
            code.append(line.rstrip())
    if block:
        comments.append("\n".join(block))
    return docstrings, comments, "\n".join(code)


def kind_pool(live=False):
    """{"in": {class: [(group, passage)]}, "shifted": {...}}: every passage the "kind" task can use.

    Sources, from data.python_text(live) (the frozen snapshot unless live=True): prose = the 79
    language-reference topics of pydoc_data.topics (group = topic key); docstring / source / comment = the
    source files of data.BROAD_DOC_MODULES minus data.HELD_OUT_MODULES (group = module). Groups at sorted
    positions 4, 9, 14, ... go to "shifted" (shorter passages).
    Passage boundaries use a fixed seed, so the pool is the same for every task seed; a text that occurs
    twice (e.g. a licence header) is kept once.
    """
    key = "kind-live" if live else "kind"
    if key in _CACHE:
        return _CACHE[key]
    texts = data.python_text(live)
    topics, sources = texts["topics"], texts["sources"]

    documents = {c: [] for c in KIND_CLASSES}  # class -> [(group, text)]
    for topic in sorted(topics):
        documents["prose"].append((topic, topics[topic]))
    modules = []
    for name in sorted(set(data.BROAD_DOC_MODULES) - set(data.HELD_OUT_MODULES)):
        if name not in sources:  # no .py file on the Python the text came from
            continue
        docstrings, comments, code = source_parts(sources[name])
        modules.append(name)
        documents["docstring"] += [(name, d) for d in docstrings]
        documents["comment"] += [(name, c) for c in comments]
        documents["source"].append((name, code))
    shifted_groups = set(sorted(topics)[KIND_SHIFTED_EVERY - 1::KIND_SHIFTED_EVERY])
    shifted_groups |= set(modules[KIND_SHIFTED_EVERY - 1::KIND_SHIFTED_EVERY])
    rng = np.random.default_rng(1234)  # fixed: passage boundaries do not depend on the task seed
    pool = {"in": {c: [] for c in KIND_CLASSES}, "shifted": {c: [] for c in KIND_CLASSES}}
    seen = set()
    for c in KIND_CLASSES:
        for group, text in documents[c]:
            part = "shifted" if group in shifted_groups else "in"
            lo, hi = KIND_SHIFTED_LENGTHS if part == "shifted" else KIND_LENGTHS
            for passage in cut_passages(text, lo, hi, rng):
                if passage not in seen:
                    seen.add(passage)
                    pool[part][c].append((group, passage))
    pool["shifted_groups"] = sorted(shifted_groups)
    _CACHE[key] = pool
    return pool


def describe_pairs(live=False):
    """(kept pairs, leaked pairs) of data.held_out_docs(): a pair is leaked when its answer occurs verbatim
    in data.broad_corpus() (the pretraining text); leaked pairs are removed from the task. Both come from
    the frozen snapshot unless live=True."""
    key = "describe-live" if live else "describe"
    if key not in _CACHE:
        broad = data.broad_corpus(live)
        kept, leaked = [], []
        for name, answer in data.held_out_docs(live):
            (leaked if answer in broad else kept).append((name, answer))
        _CACHE[key] = (kept, leaked)
    return _CACHE[key]


def is_order_passage(passage):
    """Prose enough for the order task: ORDER_MIN_WORDS words or more, mostly letters and spaces, and at
    least four distinct words (so a shuffle can differ from the original)."""
    words = passage.split(" ")
    letters = sum(ch.isalpha() or ch == " " for ch in passage)
    return (len(words) >= ORDER_MIN_WORDS and letters >= ORDER_MIN_LETTER_SHARE * len(passage)
            and len(set(words)) >= 4)


def word_passages(words, lo, hi, rng):
    """Consecutive passages of whole words joined by single spaces, each lo..hi characters long (its target
    length drawn from rng); a word that would overshoot the target ends the passage, and a passage shorter
    than lo (a document's tail) is dropped."""
    passages, current = [], []
    target = int(rng.integers(lo, hi + 1))
    for word in words:
        if current and len(" ".join(current)) + 1 + len(word) > target:
            if len(" ".join(current)) >= lo:
                passages.append(" ".join(current))
            current, target = [], int(rng.integers(lo, hi + 1))
        current.append(word)
    if lo <= len(" ".join(current)) <= hi:
        passages.append(" ".join(current))
    return passages


def order_pool():
    """{"in": [(group, passage)], "shifted": [(group, passage)]}: every passage the "order" task can use.

    in       passages of ORDER_LENGTHS characters, whole words joined by single spaces, from
             (a) each contiguous run of the broad corpus's validation region (group "broad@<position>") and
             (b) each held-out docstring (group "held_out");
    shifted  code comments of the "kind" pool (group = module), folded and filtered the same way.
    A passage that occurs twice is kept once; one that also occurs in the pretraining text (the language
    reference repeats sentences across topics) is dropped and counted in "leaked". Boundaries use a fixed
    seed: the pool is the same for every task seed.
    """
    if "order" in _CACHE:
        return _CACHE["order"]
    broad = data.broad_corpus()
    positions = np.arange(len(broad), dtype=np.int64)  # split character positions as pretraining splits ids
    train_positions, val_positions = data.train_val_split(positions, val_fraction=0.1, seed=ORDER_PRETRAIN_SEED)

    def contiguous_runs(p):  # sorted positions -> the (start, stop) of each run of consecutive ones
        runs = np.split(p, np.nonzero(np.diff(p) != 1)[0] + 1)
        return [(int(run[0]), int(run[-1]) + 1) for run in runs]

    # the language reference repeats sentences across topics: a passage also in the training text is dropped
    trained_on = re.sub(r"\s+", " ", "\n".join(broad[a:b] for a, b in contiguous_runs(train_positions)))
    # a chunk starts and ends at arbitrary characters: its first and last (possibly cut) words are dropped
    documents = [(f"broad@{a}", broad[a:b].split()[1:-1]) for a, b in contiguous_runs(val_positions)]
    documents += [("held_out", doc.split()) for doc in sorted(data._held_out_docstrings())]
    rng = np.random.default_rng(4321)  # fixed: passage boundaries do not depend on the task seed
    pool, seen = {"in": [], "shifted": [], "leaked": 0}, set()
    for group, words in documents:
        for passage in word_passages(words, *ORDER_LENGTHS, rng):
            if is_order_passage(passage) and passage not in seen:
                seen.add(passage)
                if passage in trained_on:
                    pool["leaked"] += 1
                    continue
                pool["in"].append((group, passage))
    lo, hi = ORDER_LENGTHS
    for group, comment in kind_pool()["in"]["comment"]:
        passage = re.sub(r"\s+", " ", comment).strip()
        if lo <= len(passage) <= hi and is_order_passage(passage) and passage not in seen \
                and passage not in trained_on:
            seen.add(passage)
            pool["shifted"].append((group, passage))
    _CACHE["order"] = pool
    return pool


def shuffle_words(passage, rng):
    """The passage's words (split at single spaces) in a random order that differs from the original text.

    Same words, same spaces: the two texts hold exactly the same characters. Raises ValueError for a
    passage whose every permutation reads the same (e.g. one repeated word).
    """
    words = passage.split(" ")
    if len(set(words)) < 2:
        raise ValueError(f"passage: needs two different words to shuffle, got {passage!r}")
    while True:  # a draw equal to the original (the identity, or swaps of equal words) is drawn again
        shuffled = " ".join(words[i] for i in rng.permutation(len(words)))
        if shuffled != passage:
            return shuffled
