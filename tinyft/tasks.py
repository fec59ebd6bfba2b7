"""tasks: the specialized datasets a pretrained model is fine-tuned on, built offline and deterministically.

Map of this file:
  "code"      language modelling on stdlib source (domain adaptation); shifted = source of unseen modules
  "kind"      4-way classification of a passage's register (prose, docstring, source, comment)
  "describe"  instruction pairs "Q: statistics.median\\nA: " -> its one-line docstring, from modules held
              out of pretraining; shifted = pairs of held-out modules never used in train
  "order"     2-way classification: a passage in its real word order, or the same words shuffled (equal
              characters in both classes: only knowledge of the language tells them apart); shifted = comments
  The raw text of each comes from passages.py (kind_pool, describe_pairs, order_pool), before any tokenizer.
  Task        splits train/val/test/shifted, batch(), eval_arrays(), evaluate(), few_shot_prompt(), info()
  build_task(name, tokenizer, ...) makes one; baselines.bag_of_chars_baseline(task) is the non-neural yardstick.
  Your own data: text_task (a text file: language modelling), labelled_task (JSONL/CSV: classification),
  task_from_path (what `--data PATH` calls); check_task_vocabulary(task) checks any Task, also a hand-built one.
One rule for every prompt task (kind, order, describe): a row is prompt ids + answer ids; x = row[:-1], y = row[1:]
with every target before the answer set to -1, so the loss counts the answer tokens only.
"""

import csv
import io
import json
import os
import pathlib
import re
import warnings

import numpy as np

from . import data
from .autograd import no_grad
from .passages import (
    KIND_CLASSES,
    KIND_LENGTHS,
    KIND_SHIFTED_LENGTHS,
    ORDER_LENGTHS,
    ORDER_PRETRAIN_SEED,
    describe_pairs,
    kind_pool,
    order_pool,
    shuffle_words,
)

TASKS = ("code", "kind", "describe", "order")
MAX_UNKNOWN_FRACTION = 0.05  # a tokenizer that maps more of the task's text to <unk> does not fit it

# "code": the corpus is cut into chunks of CODE_CHUNK tokens; CODE_EVAL_FRACTION of them go to val, as many
# to test, in a seeded draw; the rest are train chunks, in a seeded order.
CODE_CHUNK = 2048
CODE_EVAL_FRACTION = 0.1

# "kind": 4 classes (passages.KIND_CLASSES; class 0 is the majority when imbalance > 1). Each label word starts
# with its own letter, so one token - the label's first - names the class.
KIND_SUFFIX = "\nkind: "
KIND_VAL_PER_CLASS, KIND_TEST_PER_CLASS, KIND_SHIFTED_PER_CLASS = 50, 100, 100

# "describe": pairs of these held-out modules form the shifted split (file-system helpers, a topic the
# train pairs never touch); the other held-out modules give train / val / test.
DESCRIBE_SHIFTED_MODULES = ("shutil", "glob", "fnmatch")
DESCRIBE_VAL_FRACTION, DESCRIBE_TEST_FRACTION = 0.1, 0.2

# "order": a real passage or the same words shuffled (passages.order_pool says where the passages come from).
ORDER_CLASSES = ("real", "shuffled")
ORDER_SUFFIX = "\norder: "
ORDER_VAL_PASSAGES, ORDER_TEST_PASSAGES, ORDER_SHIFTED_PASSAGES = 100, 200, 200  # x2 examples each

# ----------------------------------------------------------------------------------------------
# Examples and the Task


class Example:
    """One prompt task example. text: the passage (kind) or qualified name (describe); prompt: what the
    model reads; answer: the reference text (kind: the label word; describe: the docstring line);
    label: class index (kind) or None; group: topic key or module it came from."""

    __slots__ = ("text", "prompt", "answer", "label", "group")

    def __init__(self, text, prompt, answer, label, group):
        self.text, self.prompt, self.answer, self.label, self.group = text, prompt, answer, label, group

    def __repr__(self):
        return f"Example(prompt={self.prompt!r}, answer={self.answer!r}, label={self.label}, group={self.group!r})"


SPLITS = ("train", "val", "test", "shifted")


class Task:
    """A specialized dataset. Attributes: name (the task: "code", "kind", "order", "describe", or your own
    data's name), task_type ("lm", "classification" or "instruction": how it is batched and scored), metric,
    higher_is_better, tokenizer, block_size, pad_id; train / val / test / shifted (lm: 1-D int64 id arrays;
    prompt tasks: lists of Example; shifted may be None: no shifted split); classification only: classes,
    label_ids (K,), train_clean_labels."""

    def __init__(self, name, task_type, metric, tokenizer, block_size, splits, pad_id, meta):
        self.name, self.task_type, self.metric = name, task_type, metric
        self.higher_is_better = metric in ("accuracy", "exact_match")
        self.tokenizer, self.block_size, self.pad_id = tokenizer, block_size, pad_id
        self.train, self.val, self.test, self.shifted = (splits[s] for s in SPLITS)
        self._meta = meta
        self._encoded = {}  # split -> list of (prompt ids, answer ids), prompt tasks only
        self.classes, self.label_ids, self.train_clean_labels = None, None, None
        self.prompt_suffix = None  # classification: the text between a passage and its label ("\nkind: ")

    # -- data -----------------------------------------------------------------------------------

    def _split(self, split):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        if getattr(self, split) is None:
            raise ValueError(f"task {self.name!r} has no {split} split (build it with shifted=FILE to measure one)")
        return getattr(self, split)

    def _answer_ids(self, example):
        """Token ids the loss counts. kind: the label's first token; describe: the answer and a '\\n'."""
        if self.task_type == "classification":
            return self.label_ids[example.label:example.label + 1]
        return np.concatenate([self.tokenizer.encode(example.answer), [self.pad_id]]).astype(np.int64)

    def _pairs(self, split):
        """[(prompt ids, answer ids)] of a prompt task split; prompt ids cut from the left to fit block_size."""
        if split not in self._encoded:
            pairs = []
            for example in self._split(split):
                answer = self._answer_ids(example)
                prompt = self.tokenizer.encode(example.prompt)[-(self.block_size - len(answer)):]
                pairs.append((prompt, answer))
            self._encoded[split] = pairs
        return self._encoded[split]

    def _rows(self, pairs):
        """(x, y) int64 (N, T) for a list of (prompt, answer) pairs: T = longest row - 1 <= block_size.

        x = (prompt + answer)[:-1] padded with pad_id; y = (prompt + answer)[1:] with the targets before the
        answer and the padding set to -1: y >= 0 exactly at the positions that predict an answer token.
        """
        T = max(len(p) + len(a) for p, a in pairs) - 1
        x = np.full((len(pairs), T), self.pad_id, dtype=np.int64)  # (N, T)
        y = np.full((len(pairs), T), -1, dtype=np.int64)  # (N, T)
        for row, (prompt, answer) in enumerate(pairs):
            sequence = np.concatenate([prompt, answer])
            x[row, :len(sequence) - 1] = sequence[:-1]
            y[row, len(prompt) - 1:len(sequence) - 1] = answer
        return x, y

    def batch(self, split, batch_size, rng):
        """A random batch (x, y), int64 (B, T), T <= block_size, y = -1 where the loss must not count.

        lm: B random windows of block_size tokens, y = x shifted by one (data.get_batch).
        prompt tasks: B examples drawn with replacement, laid out as in _rows.
        """
        ids = self._split(split)
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if self.task_type == "lm":
            return data.get_batch(ids, batch_size, self.block_size, rng)
        pairs = self._pairs(split)
        return self._rows([pairs[i] for i in rng.integers(0, len(pairs), size=batch_size)])

    def eval_arrays(self, split, shots=0, max_examples=None, seed=0):
        """Every evaluation row of a split as (x, y), int64 (N, T), in a fixed order.

        lm: non-overlapping windows at 0, T, 2T, ... (T = block_size). Prompt tasks: one row per example,
        with `shots` train demonstrations (few_shot_prompt, drawn with np.random.default_rng(seed))
        prepended to each prompt and cut from the left so the row fits block_size.
        """
        if self.task_type == "lm":
            if shots:
                raise ValueError(f"shots must be 0 for the language-modelling task {self.name!r}; few-shot "
                                 "prompting applies to the prompt tasks 'kind' and 'describe'")
            ids, T = self._split(split), self.block_size
            starts = np.arange(0, len(ids) - T, T)[:max_examples]
            x = np.stack([ids[s:s + T] for s in starts])  # (N, T)
            y = np.stack([ids[s + 1:s + T + 1] for s in starts])  # (N, T)
            return x, y
        pairs = self._pairs(split)[:max_examples]
        if shots:
            rng = np.random.default_rng(seed)
            shot_pairs = []
            for prompt, answer in pairs:
                prefix = self.tokenizer.encode(self.few_shot_prompt(shots, rng))
                shot_pairs.append((np.concatenate([prefix, prompt])[-(self.block_size - len(answer)):], answer))
            pairs = shot_pairs
        return self._rows(pairs)

    def examples(self, split):
        """(list of prompt id arrays, labels int64 (N,)) of a classification split, for a new-head classifier.

        Each prompt is the passage + "\\nkind: " (cut from the left to fit block_size - 1); the head reads
        the hidden state(s) up to its last token, where the LM would predict the label token.
        """
        if self.task_type != "classification":
            raise ValueError(f"examples() is for classification tasks; {self.name!r} is a {self.task_type} task")
        prompts = [prompt for prompt, _ in self._pairs(split)]
        return prompts, np.array([e.label for e in self._split(split)], dtype=np.int64)

    def few_shot_prompt(self, k, rng):
        """Text of k train examples drawn without replacement, each as prompt + answer + blank line, to
        prepend to a prompt (the prompting baseline). Rows built with it are cut from the left to fit
        block_size (eval_arrays), so with ~100-character passages and block_size 128 about one shot fits."""
        if self.task_type == "lm":
            raise ValueError(f"few_shot_prompt applies to prompt tasks; {self.name!r} is a language-modelling task")
        if not 0 <= k <= len(self.train):
            raise ValueError(f"k must be in 0..{len(self.train)} (the train examples), got {k}")
        chosen = rng.choice(len(self.train), size=k, replace=False)
        return "".join(self.train[i].prompt + self.train[i].answer + "\n\n" for i in chosen)

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, model, split, max_examples=None, shots=0, seed=0, batch_size=32, decode=True):
        """The task metric on a split, the model in eval mode under no_grad (its mode restored after).

        lm              {"loss": nats per token over fixed windows, "n": windows, "tokens": ...}
        classification  {"accuracy": the label whose first token the model finds most likely wins,
                         "loss": nats on the true label token, "n": examples}
        instruction     {"answer_loss": nats per answer token (teacher forced), "exact_match": greedy
                         decoding until '\\n' equals the reference (skipped if decode=False), "n": ...}
        """
        x_all, y_all = self.eval_arrays(split, shots=shots, max_examples=max_examples, seed=seed)
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            with no_grad():
                nll_sum, counted, correct = 0.0, 0, 0
                for i in range(0, len(x_all), batch_size):
                    x, y = x_all[i:i + batch_size], y_all[i:i + batch_size]  # (B, T)
                    logits, _ = model(x)  # (B, T, V)
                    logp = _log_softmax(np.asarray(logits.data, dtype=np.float64))  # (B, T, V)
                    mask = y >= 0  # (B, T)
                    picked = np.take_along_axis(logp, np.where(mask, y, 0)[..., None], axis=-1)[..., 0]
                    nll_sum -= float(picked[mask].sum())
                    counted += int(mask.sum())
                    if self.task_type == "classification":
                        rows, ends = np.nonzero(mask)  # one counted position per row
                        label_logp = logp[rows, ends][:, self.label_ids]  # (B, K)
                        correct += int((self.label_ids[label_logp.argmax(axis=1)] == y[rows, ends]).sum())
                n = len(x_all)
                if self.task_type == "lm":
                    return {"loss": nll_sum / counted, "n": n, "tokens": counted}
                if self.task_type == "classification":
                    return {"accuracy": correct / n, "loss": nll_sum / counted, "n": n}
                result = {"answer_loss": nll_sum / counted, "n": n}
                if decode:
                    result["exact_match"] = self._exact_match(model, x_all, y_all, batch_size)
                return result
        finally:
            model.train(was_training)

    def _exact_match(self, model, x_all, y_all, batch_size):
        """Fraction of rows whose greedy continuation of the prompt, up to the first '\\n', equals the reference.

        Rows are decoded together: each step runs the model on the filled part of the batch and reads
        the logits at each row's own last position (causal attention: the padding after it is unseen).
        """
        matches = 0
        for i in range(0, len(x_all), batch_size):
            x, y = x_all[i:i + batch_size], y_all[i:i + batch_size]  # (B, T)
            counted = y >= 0
            prompt_len = np.argmax(counted, axis=1) + 1  # (B,) the first counted position predicts token 0
            references = [self.tokenizer.decode(row[row >= 0][:-1]) for row in y]  # answer without its '\n'
            seq = np.full((len(x), self.block_size), self.pad_id, dtype=np.int64)  # (B, block_size)
            for r in range(len(x)):
                seq[r, :prompt_len[r]] = x[r, :prompt_len[r]]
            lengths, texts = prompt_len.copy(), [""] * len(x)
            done = np.zeros(len(x), dtype=bool)
            while not done.all():
                logits, _ = model(seq[:, :lengths.max()])  # (B, t, V)
                next_ids = np.asarray(logits.data)[np.arange(len(x)), lengths - 1].argmax(axis=-1)  # (B,)
                for r in np.nonzero(~done)[0]:
                    piece = self.tokenizer.decode(next_ids[r:r + 1])
                    if "\n" in piece:
                        texts[r] += piece.split("\n")[0]
                        done[r] = True
                        continue
                    texts[r] += piece
                    seq[r, lengths[r]] = next_ids[r]
                    lengths[r] += 1
                    if lengths[r] >= self.block_size:
                        done[r] = True
            matches += sum(t == ref for t, ref in zip(texts, references))
        return matches / len(x_all)

    def info(self):
        """Sizes, class balance, noise rate and leakage notes, as a dict of plain Python values."""
        return dict(self._meta)

    def __repr__(self):
        sizes = ", ".join(f"{s}={'none' if getattr(self, s) is None else len(getattr(self, s))}" for s in SPLITS)
        return f"Task({self.name!r}, task_type={self.task_type!r}, metric={self.metric!r}, {sizes})"


def _log_softmax(z):  # (..., V) float64
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------------------------
# Building tasks


def _pad_id(tokenizer):
    """The tokenizer's id for '\\n' (it ends every answer too), or 0 when '\\n' is not one known token."""
    ids = tokenizer.encode("\n")
    return int(ids[0]) if len(ids) == 1 and ids[0] != getattr(tokenizer, "unk_id", None) else 0


def _check_vocabulary(tokenizer, arrays, name):
    """ValueError when more than MAX_UNKNOWN_FRACTION of the task's tokens are <unk>; returns the fraction."""
    unk = getattr(tokenizer, "unk_id", None)
    if unk is None:  # byte-level BPE encodes every text
        return 0.0
    total = sum(len(a) for a in arrays)
    unknown = sum(int((np.asarray(a) == unk).sum()) for a in arrays)
    fraction = unknown / max(total, 1)
    if fraction > MAX_UNKNOWN_FRACTION:
        raise ValueError(f"tokenizer: the checkpoint's vocabulary does not fit this task: {fraction:.1%} of "
                         f"task {name!r}'s tokens are unknown (<unk>), more than {MAX_UNKNOWN_FRACTION:.0%}; "
                         "build the tokenizer over the task's text too, or widen the checkpoint's: `python -m "
                         "tinyft pretrain --init-from CKPT --corpus FILE --vocab-extra FILE` (docs/tasks.md)")
    return fraction


def _cap(n_examples, available, name, what):
    if n_examples > available:
        warnings.warn(f"n_examples={n_examples} is more than task {name!r} can provide: "
                      f"{available} {what}; using n_examples={available}", stacklevel=4)
        return available
    return n_examples


def _build_code(tokenizer, n_examples, seed, block_size):
    ids = tokenizer.encode(data.domain_corpus("stdlib_code"))
    shifted = tokenizer.encode(data.domain_corpus("stdlib_code_shifted"))
    unknown = _check_vocabulary(tokenizer, [ids, shifted], "code")
    n_chunks = len(ids) // CODE_CHUNK
    n_eval = max(1, round(CODE_EVAL_FRACTION * n_chunks))
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_chunks)

    def chunk(c):
        return ids[c * CODE_CHUNK:(c + 1) * CODE_CHUNK]

    val = np.concatenate([chunk(c) for c in sorted(order[:n_eval])])
    test = np.concatenate([chunk(c) for c in sorted(order[n_eval:2 * n_eval])])
    train_all = np.concatenate([chunk(c) for c in order[2 * n_eval:]] + [ids[n_chunks * CODE_CHUNK:]])
    n_used = _cap(n_examples, (len(train_all) - 1) // block_size, "code", f"windows of {block_size} tokens")
    train = train_all[:n_used * block_size + 1]
    meta = {
        "n_examples_requested": n_examples, "n_examples": n_used,
        "max_n_examples": (len(train_all) - 1) // block_size,
        "tokens": {"train": len(train), "train_available": len(train_all), "val": len(val), "test": len(test),
                   "shifted": len(shifted)},
        "windows": {s: max(0, (len(a) - 1) // block_size) for s, a in
                    (("val", val), ("test", test), ("shifted", shifted))},
        "splits": f"the corpus is cut into {n_chunks} chunks of {CODE_CHUNK} tokens; a seeded draw gives "
                  f"{n_eval} to val and {n_eval} to test; train is the other chunks in a seeded order, cut to "
                  "n_examples * block_size + 1 tokens; shifted = data.domain_corpus('stdlib_code_shifted') "
                  f"(modules {', '.join(data.SHIFTED_CODE_MODULES)}, never in train/val/test)",
        "unknown_fraction": unknown,
        "leakage": "the code holds its modules' docstrings, which are also in data.broad_corpus(); "
                   "measure with code_leakage(task)",
    }
    return {"train": train, "val": val, "test": test, "shifted": shifted}, meta


def _class_counts(n, k, imbalance):
    """n split into k classes with count_0 / count_{k-1} = imbalance, geometric in between, summing to n."""
    weights = imbalance ** (-np.arange(k) / (k - 1))  # (k,) 1 ... 1/imbalance
    raw = n * weights / weights.sum()
    counts = np.floor(raw).astype(int)
    for c in np.argsort(-(raw - counts))[:n - counts.sum()]:  # largest remainders get the leftover
        counts[c] += 1
    return counts


def _first_token_labels(tokenizer, classes, name):
    """The id of each label word's first token: one token names each class, so it must be known and distinct."""
    label_ids = []
    for word in classes:
        first = tokenizer.encode(word)[:1]
        if len(first) == 0 or first[0] == getattr(tokenizer, "unk_id", None):
            raise ValueError(f"tokenizer: the checkpoint's vocabulary does not fit this task: label {word!r} "
                             "starts with an unknown character")
        label_ids.append(int(first[0]))
    if len(set(label_ids)) != len(classes):
        raise ValueError(f"tokenizer: the first tokens of the labels {classes} are not distinct "
                         f"({label_ids}); the {name} task needs one token per class")
    return label_ids


def _flip_labels(examples, label_noise, classes, rng):
    """Flip round(label_noise * N) train labels in place, each to a uniformly drawn OTHER class; returns N flipped."""
    K = len(classes)
    n_flip = int(round(label_noise * len(examples)))
    for i in rng.choice(len(examples), size=n_flip, replace=False):
        e = examples[i]
        new = (e.label + int(rng.integers(1, K))) % K
        examples[i] = Example(e.text, e.prompt, classes[new], new, e.group)
    return n_flip


def _build_kind(tokenizer, n_examples, seed, block_size, label_noise, imbalance):
    pool = kind_pool()
    K = len(KIND_CLASSES)
    label_ids = _first_token_labels(tokenizer, KIND_CLASSES, "kind")
    rng = np.random.default_rng(seed)
    shuffled = {c: [pool["in"][c][i] for i in rng.permutation(len(pool["in"][c]))] for c in KIND_CLASSES}
    n_eval = KIND_VAL_PER_CLASS + KIND_TEST_PER_CLASS
    available = min(len(shuffled[c]) - n_eval for c in KIND_CLASSES)
    max_n = K * available  # the most a balanced draw could use; shrink until the imbalanced counts fit
    while _class_counts(max_n, K, imbalance).max() > available:
        max_n = int(max_n * available / _class_counts(max_n, K, imbalance).max())  # shrink until it fits
    n_used = _cap(n_examples, max_n, "kind", f"training passages (at imbalance={imbalance})")
    counts = _class_counts(n_used, K, imbalance)

    def example(label, group, passage):
        return Example(passage, passage + KIND_SUFFIX, KIND_CLASSES[label], label, group)

    splits = {s: [] for s in SPLITS}
    for c, word in enumerate(KIND_CLASSES):
        items = shuffled[word]
        splits["val"] += [example(c, g, p) for g, p in items[:KIND_VAL_PER_CLASS]]
        splits["test"] += [example(c, g, p) for g, p in items[KIND_VAL_PER_CLASS:n_eval]]
        splits["train"] += [example(c, g, p) for g, p in items[n_eval:n_eval + counts[c]]]
        shifted = pool["shifted"][word]
        splits["shifted"] += [example(c, g, p) for g, p in
                              (shifted[i] for i in rng.permutation(len(shifted))[:KIND_SHIFTED_PER_CLASS])]
    for s in ("train", "val", "test", "shifted"):  # interleave the classes
        splits[s] = [splits[s][i] for i in rng.permutation(len(splits[s]))]
    clean = np.array([e.label for e in splits["train"]], dtype=np.int64)
    n_flip = _flip_labels(splits["train"], label_noise, KIND_CLASSES, rng)
    observed = np.array([e.label for e in splits["train"]], dtype=np.int64)
    sample = [tokenizer.encode(e.prompt) for s in SPLITS for e in splits[s][:200]]
    meta = {
        "n_examples_requested": n_examples, "n_examples": n_used, "max_n_examples": max_n,
        "classes": list(KIND_CLASSES), "label_ids": label_ids,
        "sizes": {s: len(splits[s]) for s in SPLITS},
        "class_counts_train": np.bincount(observed, minlength=K).tolist(),
        "class_counts_train_clean": counts.tolist(),
        "imbalance": imbalance, "imbalance_measured": float(counts[0] / counts[-1]),
        "label_noise": label_noise, "n_flipped": n_flip,
        "pool_sizes": {part: {c: len(pool[part][c]) for c in KIND_CLASSES} for part in ("in", "shifted")},
        "passage_lengths": {"train/val/test": list(KIND_LENGTHS), "shifted": list(KIND_SHIFTED_LENGTHS)},
        "shifted_groups": pool["shifted_groups"],
        "splits": f"val {KIND_VAL_PER_CLASS} and test {KIND_TEST_PER_CLASS} passages per class, balanced and "
                  "never noisy; train = n_examples, class 0 (prose) the majority when imbalance > 1; "
                  f"shifted = {KIND_SHIFTED_PER_CLASS} per class of {KIND_SHIFTED_LENGTHS[0]}-"
                  f"{KIND_SHIFTED_LENGTHS[1]} characters from topics and modules never used in the other splits",
        "unknown_fraction": _check_vocabulary(tokenizer, sample, "kind"),
        "leakage": "prose and docstring passages come from text that is in data.broad_corpus() (unlabelled); "
                   "the labels are never in it. Measure with kind_leakage(task)",
    }
    return splits, meta, np.array(label_ids, dtype=np.int64), clean


def _build_describe(tokenizer, n_examples, seed, block_size):
    kept, leaked = describe_pairs()
    total = len(kept) + len(leaked)

    def module_of(qualified_name):
        return qualified_name.split(".")[0]

    inside = [(n, a) for n, a in kept if module_of(n) not in DESCRIBE_SHIFTED_MODULES]
    outside = [(n, a) for n, a in kept if module_of(n) in DESCRIBE_SHIFTED_MODULES]
    # Pairs sharing an answer text go to the same split, so an exact match is never a copied train answer.
    answers = sorted({a for _, a in inside})
    rng = np.random.default_rng(seed)
    answers = [answers[i] for i in rng.permutation(len(answers))]
    n_val, n_test = round(DESCRIBE_VAL_FRACTION * len(inside)), round(DESCRIBE_TEST_FRACTION * len(inside))
    split_of, filled = {}, {"val": 0, "test": 0}
    by_answer = {a: [p for p in inside if p[1] == a] for a in answers}
    for a in answers:
        s = "val" if filled["val"] < n_val else "test" if filled["test"] < n_test else "train"
        split_of[a] = s
        if s != "train":
            filled[s] += len(by_answer[a])

    def example(name, answer):
        return Example(name, f"Q: {name}\nA: ", answer, None, module_of(name))

    splits = {s: [] for s in SPLITS}
    for a in answers:
        splits[split_of[a]] += [example(n, a) for n, _ in by_answer[a]]
    splits["shifted"] = [example(n, a) for n, a in outside]
    max_n = len(splits["train"])
    n_used = _cap(n_examples, max_n, "describe",
                  "training pairs (the held-out docstrings of data.HELD_OUT_MODULES)")
    splits["train"] = splits["train"][:n_used]
    # Answers are cut (in tokens) so prompt + answer + '\n' fits block_size.
    longest_prompt = max(len(tokenizer.encode(e.prompt)) for s in SPLITS for e in splits[s])
    if longest_prompt + 2 > block_size:
        raise ValueError(f"block_size={block_size} is too small for task 'describe': its longest prompt has "
                         f"{longest_prompt} tokens; pass block_size >= {longest_prompt + 2}")
    for s in SPLITS:
        for e in splits[s]:
            room = block_size - len(tokenizer.encode(e.prompt)) - 1
            ids = tokenizer.encode(e.answer)
            if len(ids) > room:
                e.answer = tokenizer.decode(ids[:room])
    encoded = [tokenizer.encode(e.prompt + e.answer) for s in SPLITS for e in splits[s]]
    meta = {
        "n_examples_requested": n_examples, "n_examples": n_used, "max_n_examples": max_n,
        "sizes": {s: len(splits[s]) for s in SPLITS},
        "pairs_total": total, "pairs_leaked_removed": len(leaked), "leakage_fraction": len(leaked) / total,
        "modules_in": sorted({module_of(n) for n, _ in inside}), "modules_shifted": list(DESCRIBE_SHIFTED_MODULES),
        "splits": f"pairs of the held-out modules other than {', '.join(DESCRIBE_SHIFTED_MODULES)}, grouped by "
                  f"answer text (equal answers share a split), seeded: val ~{DESCRIBE_VAL_FRACTION:.0%}, test "
                  f"~{DESCRIBE_TEST_FRACTION:.0%}, train the rest (capped at n_examples); shifted = every pair of "
                  f"{', '.join(DESCRIBE_SHIFTED_MODULES)}",
        "size_note": f"only {total} pairs exist in the snapshot (data.held_out_docs()); n_examples is capped at the "
                     "train pairs. More pairs need more modules in data.HELD_OUT_MODULES.",
        "unknown_fraction": _check_vocabulary(tokenizer, encoded, "describe"),
        "leakage": f"{len(leaked)} of {total} answers occur verbatim in data.broad_corpus() and were removed; "
                   "the modules are kept out of pretraining (data.HELD_OUT_MODULES)",
    }
    return splits, meta


def _build_order(tokenizer, n_examples, seed, block_size, label_noise, imbalance):
    """Twins: each passage gives a "real" example and a "shuffled" one, and both go to the same split."""
    pool = order_pool()
    K = len(ORDER_CLASSES)
    label_ids = _first_token_labels(tokenizer, ORDER_CLASSES, "order")
    rng = np.random.default_rng(seed)
    passages = [pool["in"][i] for i in rng.permutation(len(pool["in"]))]
    n_eval = ORDER_VAL_PASSAGES + ORDER_TEST_PASSAGES
    available = len(passages) - n_eval  # passages left for train
    # Train holds counts[0] real and counts[1] shuffled examples from distinct passages' twins: the first
    # min(counts) passages give both, the majority class takes its rest from further passages alone.
    max_n = 2 * available
    while _class_counts(max_n, K, imbalance).max() > available:
        max_n = int(max_n * available / _class_counts(max_n, K, imbalance).max())
    n_used = _cap(n_examples, max_n, "order", f"training examples (at imbalance={imbalance})")
    counts = _class_counts(n_used, K, imbalance)

    def twins(group, passage, labels=(0, 1)):
        texts = {0: passage, 1: shuffle_words(passage, rng)}
        return [Example(texts[c], texts[c] + ORDER_SUFFIX, ORDER_CLASSES[c], c, group) for c in labels]

    splits = {s: [] for s in SPLITS}
    for group, passage in passages[:ORDER_VAL_PASSAGES]:
        splits["val"] += twins(group, passage)
    for group, passage in passages[ORDER_VAL_PASSAGES:n_eval]:
        splits["test"] += twins(group, passage)
    train_passages = passages[n_eval:]
    both = int(counts.min())
    for group, passage in train_passages[:both]:
        splits["train"] += twins(group, passage)
    majority = int(counts.argmax())
    for group, passage in train_passages[both:both + int(counts.max()) - both]:
        splits["train"] += twins(group, passage, labels=(majority,))
    shifted = pool["shifted"]
    for i in rng.permutation(len(shifted))[:ORDER_SHIFTED_PASSAGES]:
        splits["shifted"] += twins(*shifted[i])
    for s in SPLITS:  # interleave the classes (twins no longer side by side)
        splits[s] = [splits[s][i] for i in rng.permutation(len(splits[s]))]
    clean = np.array([e.label for e in splits["train"]], dtype=np.int64)
    n_flip = _flip_labels(splits["train"], label_noise, ORDER_CLASSES, rng)
    observed = np.array([e.label for e in splits["train"]], dtype=np.int64)
    sample = [tokenizer.encode(e.prompt) for s in SPLITS for e in splits[s][:200]]
    longest = max(len(tokenizer.encode(e.prompt)) for s in SPLITS for e in splits[s])
    meta = {
        "n_examples_requested": n_examples, "n_examples": n_used, "max_n_examples": max_n,
        "classes": list(ORDER_CLASSES), "label_ids": label_ids,
        "sizes": {s: len(splits[s]) for s in SPLITS},
        "class_counts_train": np.bincount(observed, minlength=K).tolist(),
        "class_counts_train_clean": counts.tolist(),
        "imbalance": imbalance, "label_noise": label_noise, "n_flipped": n_flip,
        "pool_sizes": {part: len(pool[part]) for part in ("in", "shifted")},
        "passages_leaked_removed": pool["leaked"],
        "passage_lengths": list(ORDER_LENGTHS),
        "longest_prompt_tokens": longest, "whole_passage_in_view": bool(longest + 1 <= block_size),
        "splits": f"passages from the broad corpus's validation region (pretraining seed {ORDER_PRETRAIN_SEED}, "
                  f"character tokenizer) and the held-out modules' docstrings; val {ORDER_VAL_PASSAGES} and test "
                  f"{ORDER_TEST_PASSAGES} passages, each as its real and its shuffled twin, in the same split; "
                  f"train = n_examples from the other passages; shifted = {ORDER_SHIFTED_PASSAGES} code comments "
                  "and their shuffles",
        "unknown_fraction": _check_vocabulary(tokenizer, sample, "order"),
        "leakage": "none by construction for a character-level base pretrained with seed "
                   f"{ORDER_PRETRAIN_SEED}: the passages are outside its training text. Measure with "
                   "order_leakage(task, pretraining_text)",
    }
    return splits, meta, np.array(label_ids, dtype=np.int64), clean


def build_task(name, tokenizer, n_examples=1000, seed=0, block_size=128, label_noise=0.0, imbalance=1.0):
    """Build a specialized task from offline text, deterministically for a given seed.

    name         "code" (lm), "kind" or "order" (classification), or "describe" (instruction)
    tokenizer    the pretrained checkpoint's tokenizer (CharTokenizer or BPETokenizer)
    n_examples   training examples: windows of block_size tokens (code), passages (kind), pairs (describe);
                 more than the task holds is capped to its maximum with a warning (info() says both)
    seed         picks the splits' members and order, the imbalance subset and the noisy labels
    block_size   longest row in tokens (a window, or prompt + answer)
    label_noise  kind, order: fraction of TRAIN labels flipped to a uniformly drawn other class, in [0, 1)
    imbalance    kind, order: train count of the majority class (prose; real) / the minority class, >= 1
    """
    if name not in TASKS:
        raise ValueError(f"name: unknown task {name!r}; valid tasks are {', '.join(TASKS)}")
    if isinstance(n_examples, bool) or not isinstance(n_examples, (int, np.integer)) or n_examples < 1:
        raise ValueError(f"n_examples must be an int >= 1, got {n_examples!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 16:
        raise ValueError(f"block_size must be an int >= 16, got {block_size!r}")
    if not isinstance(label_noise, (int, float)) or not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got {label_noise!r}")
    if not isinstance(imbalance, (int, float)) or not 1.0 <= imbalance < float("inf"):
        raise ValueError(f"imbalance must be a finite number >= 1 (1 = balanced), got {imbalance!r}")
    if name not in ("kind", "order") and (label_noise != 0.0 or imbalance != 1.0):
        raise ValueError(f"label_noise and imbalance apply to the classification tasks 'kind' and 'order' only; "
                         f"task {name!r} got label_noise={label_noise}, imbalance={imbalance}")
    if not callable(getattr(tokenizer, "encode", None)) or not hasattr(tokenizer, "vocab_size"):
        raise ValueError(f"tokenizer must have encode() and vocab_size, got {type(tokenizer).__name__}")
    n_examples, block_size = int(n_examples), int(block_size)
    pad = _pad_id(tokenizer)
    common = {"name": name, "block_size": block_size, "seed": seed, "pad_id": pad,
              "tokenizer": f"{type(tokenizer).__name__}(vocab_size={tokenizer.vocab_size})"}
    if name == "code":
        splits, meta = _build_code(tokenizer, n_examples, seed, block_size)
        task = Task(name, "lm", "loss", tokenizer, block_size, splits, pad, {**common, "task_type": "lm", **meta})
    elif name == "kind":
        splits, meta, label_ids, clean = _build_kind(tokenizer, n_examples, seed, block_size, label_noise,
                                                     imbalance)
        task = Task(name, "classification", "accuracy", tokenizer, block_size, splits, pad,
                    {**common, "task_type": "classification", **meta})
        task.classes, task.label_ids, task.train_clean_labels = KIND_CLASSES, label_ids, clean
        task.prompt_suffix = KIND_SUFFIX
    elif name == "order":
        splits, meta, label_ids, clean = _build_order(tokenizer, n_examples, seed, block_size, label_noise,
                                                      imbalance)
        task = Task(name, "classification", "accuracy", tokenizer, block_size, splits, pad,
                    {**common, "task_type": "classification", **meta})
        task.classes, task.label_ids, task.train_clean_labels = ORDER_CLASSES, label_ids, clean
        task.prompt_suffix = ORDER_SUFFIX
    else:
        splits, meta = _build_describe(tokenizer, n_examples, seed, block_size)
        task = Task(name, "instruction", "answer_loss", tokenizer, block_size, splits, pad,
                    {**common, "task_type": "instruction", **meta})
    task._meta["metric"], task._meta["higher_is_better"] = task.metric, task.higher_is_better
    return task


# ----------------------------------------------------------------------------------------------
# Your own data: a text to model (text_task) or labelled examples to classify (labelled_task)

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


def check_task_vocabulary(task):
    """The share of a task's tokens its tokenizer maps to <unk>: a ValueError above MAX_UNKNOWN_FRACTION, or
    for an id outside the vocabulary. For any Task, also one built by hand with Task(...): finetune checks it.

    lm splits are counted as they are (ids); prompt splits as the model reads them (prompt + answer ids).
    """
    tokenizer = getattr(task, "tokenizer", None)
    if tokenizer is None:
        return 0.0
    name = getattr(task, "name", type(task).__name__)
    arrays = []
    for split in SPLITS:
        value = getattr(task, split, None)
        if value is None:
            continue
        if isinstance(value, np.ndarray):
            ids = value
        elif isinstance(task, Task) and task.task_type != "lm":
            ids = np.concatenate([np.concatenate(pair) for pair in task._pairs(split)] or [np.zeros(0, np.int64)])
        else:
            continue  # something this check cannot read (a duck-typed task's own containers)
        ids = np.asarray(ids)
        outside = ids[(ids < 0) | (ids >= tokenizer.vocab_size)]
        if outside.size:
            raise ValueError(f"task {name!r}: its {split} split holds id {int(outside[0])}, outside the tokenizer's "
                             f"vocabulary 0..{tokenizer.vocab_size - 1}; were its ids made by another tokenizer?")
        arrays.append(ids)
    return _check_vocabulary(tokenizer, arrays, name)


# ----------------------------------------------------------------------------------------------
# Leakage measurements


def code_leakage(task, window=32):
    """Fraction of the code task's test windows (of `window` tokens) found verbatim in the broad corpus
    (pretraining) and in its own train split (data.validation_overlap)."""
    broad = task.tokenizer.encode(data.broad_corpus())
    return {"test_in_broad": data.validation_overlap(broad, task.test, window),
            "test_in_train": data.validation_overlap(task.train, task.test, window),
            "shifted_in_broad": data.validation_overlap(broad, task.shifted, window), "window": window}


def kind_leakage(task):
    """Fraction of the kind task's test / shifted passages found verbatim in the broad corpus, per class."""
    broad = data.broad_corpus()
    result = {}
    for split in ("test", "shifted"):
        for c, word in enumerate(KIND_CLASSES):
            texts = [e.text for e in task._split(split) if e.label == c]
            result[f"{split}/{word}"] = sum(t in broad for t in texts) / max(len(texts), 1)
    return result


def order_leakage(task, pretraining_text):
    """Fraction of the order task's real passages, per split, found verbatim in `pretraining_text` (white
    space folded to single spaces as in the passages): 0 when the base model never trained on them."""
    folded = re.sub(r"\s+", " ", pretraining_text)
    result = {}
    for split in SPLITS:
        real = [e.text for e in task._split(split) if e.answer == ORDER_CLASSES[0] and e.label == 0]
        result[split] = sum(p in folded for p in real) / max(len(real), 1)
    return result

