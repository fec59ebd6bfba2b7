"""Pretraining: teach a small GPT to predict the next token of broad text, one written-out step at a time.

Map of this file:
  PretrainConfig        every knob, with defaults that finish in a few minutes on a 2-core laptop
  prepare_data(...)     text -> tokenizer -> ids -> train / validation split, plus the baselines to beat
  estimate_loss(...)    mean loss on fixed validation batches (the same batches every time)
  pretrain(...)         the loop: batch -> forward -> loss -> backward -> clip -> step -> schedule,
                        with evaluation, checkpoints (also on Ctrl-C) and bit-identical resume;
                        init_from: continued (domain-adaptive) pretraining from a checkpoint's weights
  course_model(preset)  the course's shared base models ("tiny", "base", "large"), pretrained once, cached
The command line (`python -m tinyft pretrain`) is in cli.py.
Recipe after nanoGPT's train.py (AdamW, warmup + cosine, clipping), rewritten to be read top to bottom.
"""

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from . import checkpoint, data, optim
from .autograd import get_rng_state, manual_seed, no_grad, set_rng_state
from .nn import GELU_KINDS, GPT, GPTConfig
from .tasks import MAX_UNKNOWN_FRACTION
from .tokenizers import BPETokenizer, CharTokenizer, tokenizer_from_dict

CHECKPOINT_NAME = "ckpt.npz"
HISTORY_NAME = "history.jsonl"


@dataclass
class PretrainConfig:
    """What to train, on what, for how long. Field names follow nanoGPT where it has one."""

    corpus: str = "broad"  # a corpus name (data.CORPORA) or a path to your own text file or folder
    tokenizer: str = "char"  # "char" or "bpe"
    bpe_vocab_size: int = 512
    init_from: str | None = None  # a checkpoint to continue from: its weights, tokenizer and architecture
    vocab_extra: str | None = None  # a text file or folder whose characters join the character vocabulary
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    dropout: float = 0.0
    gelu: str = "tanh"  # the MLP's GELU: "tanh" (GPT-2's) or "exact" (nanoGPT's nn.GELU(); for export to nanoGPT)
    batch_size: int = 16
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 100
    steps: int = 2000
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_batches: int = 20
    checkpoint_every: int = 500
    sample_tokens: int = 200
    sample_prompt: str = "The "  # the text the final sample continues
    seed: int = 0
    out: str = "runs/pretrain"

    def validate(self):
        for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "steps", "eval_every",
                     "eval_batches", "checkpoint_every", "bpe_vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.gelu not in GELU_KINDS:
            raise ValueError(f"gelu must be one of {', '.join(map(repr, GELU_KINDS))}, got {self.gelu!r}")
        if self.tokenizer not in ("char", "bpe"):
            raise ValueError(f"tokenizer must be 'char' or 'bpe', got {self.tokenizer!r}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must not exceed steps ({self.steps}); "
                             f"pass a smaller --warmup-steps, e.g. {self.steps // 10}")
        if self.warmup_steps < 0 or self.grad_clip <= 0:
            raise ValueError(f"need warmup_steps >= 0 and grad_clip > 0, got {self.warmup_steps}, {self.grad_clip}")
        if not isinstance(self.sample_prompt, str) or not self.sample_prompt:
            raise ValueError(f"sample_prompt must be a non-empty string (the text the sample continues), got "
                             f"{self.sample_prompt!r}")
        for name in ("init_from", "vocab_extra"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (str, os.PathLike)) or not os.path.exists(value)):
                raise ValueError(f"{name}: no file or folder at {value!r}; expected an existing path")
        if self.vocab_extra is not None and self.tokenizer == "bpe":
            raise ValueError("vocab_extra widens a character vocabulary; the byte-level BPE tokenizer already "
                             "encodes every text (leave --vocab-extra out, or use --tokenizer char)")


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def load_corpus_text(corpus):
    """A corpus name from data.CORPORA, or a path to a text file or folder of the user's."""
    if os.path.exists(corpus):
        return data.load_text(corpus)
    return data.load_corpus(corpus)


def build_tokenizer(kind, text, bpe_vocab_size=512, extra_texts=()):
    """A character tokenizer over `text` and `extra_texts` together, or a byte-level BPE trained on `text`.

    The character vocabulary also covers the fine-tuning domain (extra_texts), so every character a
    later fine-tuning run meets has an embedding that pretraining already trained.
    """
    if kind == "char":
        return CharTokenizer.build([text, *extra_texts])
    return BPETokenizer.train(text, vocab_size=bpe_vocab_size)


def prepare_data(config, tokenizer=None):
    """Text -> tokenizer -> ids -> (train, val). Returns a dict the loop and the report use."""
    text = load_corpus_text(config.corpus)
    if tokenizer is None:
        extra = (data.load_corpus("stdlib_code"),) if config.tokenizer == "char" else ()
        if config.vocab_extra is not None:
            extra += (data.load_text(config.vocab_extra),)
        tokenizer = build_tokenizer(config.tokenizer, text, config.bpe_vocab_size, extra)
    ids = tokenizer.encode(text)  # (N,) int64
    train_ids, val_ids = data.train_val_split(ids, val_fraction=0.1, seed=config.seed)
    for name, part in (("train", train_ids), ("validation", val_ids)):
        if len(part) <= config.block_size + 1:
            raise ValueError(f"the {name} split of corpus {config.corpus!r} has {len(part)} tokens, fewer than "
                             f"block_size + 2 = {config.block_size + 2}; use a longer text or a smaller --block-size")
    return {
        "tokenizer": tokenizer,
        "train": train_ids,
        "val": val_ids,
        "chars": len(text),
        "unigram_val_loss": data.unigram_loss(train_ids, val_ids, tokenizer.vocab_size),
        "chars_per_token": len(text) / max(len(ids), 1),
    }


def fixed_batches(ids, n_batches, batch_size, block_size, seed):
    """The same evaluation batches every time (their own seed), so curves compare like with like."""
    rng = np.random.default_rng(seed)
    return [data.get_batch(ids, batch_size, block_size, rng) for _ in range(n_batches)]


@no_grad()
def estimate_loss(model, batches):
    """Mean next-token cross-entropy (nats per token) of `model` over fixed batches, in eval mode:

        L = (1 / n_batches) * sum over batches (x, y) of  mean_{b,t} -log p(y[b,t] | x[b, :t+1])

    batches: a list of (x, y) int arrays (B, T), the SAME list each time it is measured (fixed_batches makes
    one), so differences between two measurements are the model's alone. Dropout is off while measuring;
    the model's mode is restored. forgetting.source_loss is this on held-out pretraining text.
    """
    if not batches:
        raise ValueError("estimate_loss: batches is empty; pass a list of (x, y) batches (fixed_batches makes one)")
    was_training = model.training
    model.eval()
    try:
        losses = [model(x, y)[1].item() for x, y in batches]
    finally:
        model.train(was_training)
    return float(np.mean(losses))


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------


@dataclass
class PretrainResult:
    model: GPT
    tokenizer: object
    history: list
    checkpoint: str
    steps: int
    final_train_loss: float
    final_val_loss: float
    unigram_val_loss: float
    chars_per_token: float
    tokens_per_s: float
    wall_s: float
    sample: str
    interrupted: bool = False

    def summary(self):
        """The JSON-able facts of the run (what `--json` prints)."""
        return {
            "steps": self.steps,
            "final_train_loss": round(self.final_train_loss, 4),
            "final_val_loss": round(self.final_val_loss, 4),
            "final_val_bits_per_char": round(bits_per_char(self.final_val_loss, self.chars_per_token), 4),
            "unigram_val_loss": round(self.unigram_val_loss, 4),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "wall_s": round(self.wall_s, 2),
            "checkpoint": self.checkpoint,
            "interrupted": self.interrupted,
        }


def bits_per_char(loss_nats_per_token, chars_per_token):
    """Convert nats per token to bits per character: divide by ln 2 and by characters per token."""
    return loss_nats_per_token / math.log(2) / chars_per_token


def write_history(path, history):
    """history (a list of dicts) as JSON lines, written atomically (checkpoint.atomic_write)."""
    checkpoint.atomic_write(path, "".join(json.dumps(row) + "\n" for row in history))


def check_out_dir(out):
    """Create the output folder, or raise a ValueError that names it and says what to do."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out!r}: cannot create the folder ({err.strerror}); choose a writable folder") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out {out!r} is not writable; choose a folder you can write to")


class StopAfter:
    """A pretrain callback that stops the run after `n` steps of this call, as Ctrl-C would: the checkpoint
    is saved, the result says interrupted=True, and pretrain(..., resume=True) continues bit-identically.
    Notebook 05 trains one run in stages with it; the resume tests play a user pressing Ctrl-C with it."""

    def __init__(self, n):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"StopAfter: n must be an int >= 1 (steps to run before stopping), got {n!r}")
        self.n, self.seen = int(n), 0

    def after_step(self, step, model, row):
        self.seen += 1
        return self.seen >= self.n


def _resume_state(config, ckpt_path, resume):
    """The checkpoint to continue from (None for a fresh run), checked against `config`."""
    if resume not in (True, False, "auto"):
        raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
    if resume == "auto":
        resume = os.path.exists(ckpt_path)
    if not resume:
        return None
    if not os.path.exists(ckpt_path):
        raise ValueError(f"--resume: no checkpoint at {ckpt_path}; run once without --resume first")
    state = checkpoint.load(ckpt_path)
    saved = state.meta.get("pretrain_config", {})
    for key in ("corpus", "tokenizer", "block_size", "n_layer", "n_head", "n_embd", "gelu", "seed", "init_from",
                "vocab_extra"):
        if key in saved and saved[key] != getattr(config, key):
            raise ValueError(f"--resume: the checkpoint was trained with {key}={saved[key]!r} but this run asks "
                             f"for {getattr(config, key)!r}; use the same settings or a new --out")
    return state


def pretrain(config=None, resume=False, progress=True, log=print, callbacks=()):
    """Pretrain a GPT as `config` says; return a PretrainResult (history for plots, final checkpoint).

    resume=True continues from `config.out`/ckpt.npz exactly where it stopped (weights, optimizer moments,
    the step counter and both random generators), bit-identical to a run never interrupted; resume="auto"
    resumes when that checkpoint exists, so a finished run returns at once (notebooks use it as a cache).
    Ctrl-C saves a checkpoint and returns cleanly. callbacks: objects with after_step(step, model, row),
    called after every step; one that returns True stops the run as Ctrl-C would (StopAfter(n) is one).
    """
    config = config or PretrainConfig()
    config.validate()
    config, init = resolve_init_from(config)  # continued pretraining: the checkpoint's architecture wins
    _check_callbacks(callbacks)
    check_out_dir(config.out)
    ckpt_path = os.path.join(config.out, CHECKPOINT_NAME)
    if init is not None and os.path.exists(ckpt_path) and os.path.samefile(ckpt_path, config.init_from):
        raise ValueError(f"--out {config.out!r} holds the checkpoint --init-from reads; choose another --out "
                         "(pretraining never writes over its input)")

    # --- 1. model, optimizer and data (fresh, or rebuilt from the checkpoint) ---------------------
    state = _resume_state(config, ckpt_path, resume)
    manual_seed(config.seed)
    if state:
        tokenizer = tokenizer_from_dict(state.meta["tokenizer"])
    else:
        tokenizer = _initial_tokenizer(config, init)  # None: built from the corpus by prepare_data
    prepared = prepare_data(config, tokenizer)
    tokenizer = prepared["tokenizer"]
    check_sample_prompt(config.sample_prompt, tokenizer)
    if init is not None:
        check_corpus_coverage(prepared, tokenizer, config)
    model_config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=config.block_size, n_layer=config.n_layer,
                             n_head=config.n_head, n_embd=config.n_embd, dropout=config.dropout, gelu=config.gelu,
                             bias=GPTConfig.from_dict(init.config).bias if init is not None else True)
    model = GPT(model_config)
    optimizer = optim.AdamW(optim.param_groups_for_weight_decay(model, config.weight_decay), lr=config.lr,
                            betas=(0.9, 0.95))
    batch_rng = np.random.default_rng(config.seed)  # draws the training windows
    val_batches = fixed_batches(prepared["val"], config.eval_batches, config.batch_size, config.block_size, seed=1234)
    history, start_step, train_seconds = [], 0, 0.0
    if state:
        history, start_step, train_seconds = _restore(state, ckpt_path, model, optimizer, batch_rng)
        log(f"resumed from {ckpt_path} at step {start_step}")
    elif init is not None:
        added = load_initial_weights(model, init)
        log(f"continuing pretraining from {config.init_from} (step {init.meta.get('step', '?')}): its weights and "
            f"tokenizer" + (f", plus {added} new characters from {config.vocab_extra}" if added else "")
            + "; a fresh optimizer and schedule")

    params = list(model.parameters())
    tokens_per_step = config.batch_size * config.block_size

    def save(step):  # everything resume needs, and the history as JSON lines beside it
        checkpoint.save(ckpt_path, model, optimizer, step=step, tokenizer=tokenizer.to_dict(), history=history,
                        pretrain_config=dataclasses.asdict(config), batch_rng_state=batch_rng.bit_generator.state,
                        rng_state=get_rng_state(), train_seconds=train_seconds, stage="pretrain")
        write_history(os.path.join(config.out, HISTORY_NAME), history)

    if start_step == 0:
        log(f"pretraining a {model.num_parameters():,}-parameter GPT on {config.corpus!r} "
            f"({prepared['chars']:,} characters, {len(prepared['train']):,} train / {len(prepared['val']):,} "
            f"validation tokens, {config.tokenizer} tokenizer with {tokenizer.vocab_size} ids); "
            f"unigram baseline {prepared['unigram_val_loss']:.3f} nats/token")

    # --- 2. the loop -------------------------------------------------------------------------------
    step, interrupted = start_step, False
    bar = tqdm(total=config.steps, initial=start_step, disable=not progress, desc="pretrain", unit="step")
    try:
        while step < config.steps and not interrupted:
            t0 = time.perf_counter()
            lr = optim.cosine_schedule(step, config.lr, config.warmup_steps, config.steps, config.min_lr)
            optim.set_lr(optimizer, lr)  # schedule
            x, y = data.get_batch(prepared["train"], config.batch_size, config.block_size, batch_rng)  # (B, T) each
            logits, loss = model(x, y)  # forward: logits (B, T, V), loss a scalar
            optimizer.zero_grad()
            loss.backward()  # backward
            grad_norm = optim.clip_grad_norm(params, config.grad_clip)  # clip
            optimizer.step()  # step
            step += 1
            dt = time.perf_counter() - t0
            train_seconds += dt
            loss_value = loss.item()
            row = {"step": step, "train_loss": loss_value, "lr": lr, "grad_norm": grad_norm,
                   "tokens_per_s": tokens_per_step / dt, "time_s": train_seconds}
            if step % config.eval_every == 0 or step == config.steps:
                row["val_loss"] = estimate_loss(model, val_batches)  # evaluate
            history.append(row)
            postfix = {"loss": f"{loss_value:.3f}", "lr": f"{lr:.1e}", "tok_s": f"{tokens_per_step / dt:,.0f}"}
            if "val_loss" in row:
                postfix["val"] = f"{row['val_loss']:.3f}"
            bar.set_postfix(postfix)
            bar.update(1)
            if step % config.checkpoint_every == 0 and step < config.steps:
                save(step)  # periodic checkpoint
            if any([callback.after_step(step, model, row) for callback in callbacks]):  # each sees every step
                interrupted = True  # a callback asked to stop: save and return as on Ctrl-C
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if step > start_step:  # a finished run read back (resume="auto", a cache) trained nothing: not rewritten
        save(step)  # the last checkpoint: at the end, or where Ctrl-C stopped us
    if interrupted:
        log(f"interrupted at step {step}: checkpoint saved to {ckpt_path}; continue with --resume")

    # --- 3. report ---------------------------------------------------------------------------------
    return _result(config, prepared, model, history, ckpt_path, step, val_batches, train_seconds, interrupted)


def _check_callbacks(callbacks):
    for callback in callbacks:
        if not callable(getattr(callback, "after_step", None)):
            raise ValueError(f"callbacks: each needs an after_step(step, model, row) method, got {callback!r}")


def _restore(state, ckpt_path, model, optimizer, batch_rng):
    """Put a checkpoint's weights, AdamW moments and both random generators back; (history, step, seconds)."""
    checkpoint.restore(ckpt_path, model, optimizer)
    batch_rng.bit_generator.state = state.meta["batch_rng_state"]
    set_rng_state(state.meta["rng_state"])
    return state.meta["history"], state.meta["step"], state.meta.get("train_seconds", 0.0)


def _result(config, prepared, model, history, ckpt_path, step, val_batches, train_seconds, interrupted):
    """The PretrainResult: final losses (train: mean of the last 20 steps), a sample from config.sample_prompt,
    tokens/s."""
    tokenizer = prepared["tokenizer"]
    final_val = history[-1]["val_loss"] if history and "val_loss" in history[-1] else estimate_loss(model, val_batches)
    prompt = tokenizer.encode(config.sample_prompt)[None, :]  # (1, t)
    sample = tokenizer.decode(model.generate(prompt, config.sample_tokens, temperature=0.8, seed=config.seed)[0])
    recent = [row["train_loss"] for row in history[-20:]]
    tokens_per_step = config.batch_size * config.block_size
    return PretrainResult(
        model=model, tokenizer=tokenizer, history=history, checkpoint=ckpt_path, steps=step,
        final_train_loss=float(np.mean(recent)) if recent else float("nan"), final_val_loss=final_val,
        unigram_val_loss=prepared["unigram_val_loss"], chars_per_token=prepared["chars_per_token"],
        tokens_per_s=tokens_per_step * step / train_seconds if train_seconds else 0.0,
        wall_s=train_seconds, sample=sample, interrupted=interrupted,
    )


# ----------------------------------------------------------------------------------------------------
# Continued (domain-adaptive) pretraining: start from a checkpoint's weights instead of random ones
# ----------------------------------------------------------------------------------------------------

# What a checkpoint fixes: a continued run takes these from it (a config field left at its default takes the
# checkpoint's value; any other value that differs is an error, never silently overridden).
INIT_FROM_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "gelu", "tokenizer")


def resolve_init_from(config):
    """(config, checkpoint.Checkpoint or None): for config.init_from, the config with the checkpoint's
    architecture and tokenizer kind (INIT_FROM_KEYS), and the loaded checkpoint; (config, None) without it.

    The checkpoint must hold a plain GPT (pretrain's, import's, or a fine-tuned model saved whole with its head
    tied) and its tokenizer. What continues: the weights and the tokenizer (widened by vocab_extra); what starts
    afresh: the optimizer (no AdamW moments), the schedule (warmup, cosine, step 0), the history.
    """
    paths = {name: os.fspath(getattr(config, name)) for name in ("init_from", "vocab_extra")
             if getattr(config, name) is not None}
    config = dataclasses.replace(config, **paths)  # a pathlib.Path becomes a str (saved as JSON in checkpoints)
    if config.init_from is None:
        return config, None
    path = config.init_from
    if not os.path.isfile(path):
        raise ValueError(f"init_from: {path!r} is not a file; expected a checkpoint such as runs/pretrain/ckpt.npz")
    init = checkpoint.load(path)  # CheckpointError (a ValueError) names what is wrong
    finetuned = init.meta.get("finetune") if isinstance(init.meta.get("finetune"), dict) else {}
    if init.meta.get("model_class") != "GPT" or not isinstance(init.config, dict) or \
            finetuned.get("export") == "adapter" or finetuned.get("head_untied"):
        raise ValueError(f"init_from: {path!r} does not hold a plain GPT (it holds a {init.meta.get('model_class')}"
                         f"{', LoRA adapters only' if finetuned.get('export') == 'adapter' else ''}"
                         f"{', with an untied head' if finetuned.get('head_untied') else ''}); continue from a "
                         "pretrained or imported checkpoint, or a fine-tuned one saved whole with its head tied")
    if not isinstance(init.meta.get("tokenizer"), dict):
        raise ValueError(f"init_from: {path!r} holds no tokenizer, so the new corpus cannot be turned into its ids; "
                         "use a checkpoint written by `python -m tinyft pretrain` or `import`")
    gpt = GPTConfig.from_dict(init.config)
    fixed = {key: getattr(gpt, key) for key in INIT_FROM_KEYS if key != "tokenizer"}
    fixed["tokenizer"] = init.meta["tokenizer"].get("type")
    defaults, changes = PretrainConfig(), {}
    for key, value in fixed.items():
        asked = getattr(config, key)
        if asked == value:
            continue
        if asked != getattr(defaults, key):
            raise ValueError(f"init_from: the checkpoint has {key}={value!r}, but this run asks for {key}={asked!r}; "
                             "continued pretraining keeps the checkpoint's architecture: leave "
                             f"{key} (--{key.replace('_', '-')}) out")
        changes[key] = value
    config = dataclasses.replace(config, **changes)
    if config.vocab_extra is not None and config.tokenizer == "bpe":
        raise ValueError(f"vocab_extra widens a character vocabulary, but {path!r} uses the byte-level BPE "
                         "tokenizer, which already encodes every text; leave --vocab-extra out")
    return config, init


def widen_vocabulary(tokenizer, text):
    """(CharTokenizer, added characters): `tokenizer` with every character of `text` it lacks appended, in sorted
    order, after its own. The old characters keep their ids, so the old embedding rows keep their meaning."""
    added = sorted(set(text) - set(tokenizer.chars))
    return CharTokenizer(list(tokenizer.chars) + added), added


def _initial_tokenizer(config, init):
    """The tokenizer a fresh run starts with: None (prepare_data builds one from the corpus), or for
    init_from the checkpoint's own, widened by config.vocab_extra."""
    if init is None:
        return None
    tokenizer = tokenizer_from_dict(init.meta["tokenizer"])
    if config.vocab_extra is not None:
        tokenizer, _ = widen_vocabulary(tokenizer, data.load_text(config.vocab_extra))
    return tokenizer


def load_initial_weights(model, init):
    """Copy a checkpoint's weights into a freshly built `model`; returns how many vocabulary rows are new.

    The model may have a wider vocabulary than the checkpoint (widen_vocabulary appended characters): rows
    0..V_old-1 of the tied wte / lm_head matrix come from the checkpoint, the new rows keep the fresh
    model's random draws (normal, std 0.02, as every embedding starts), to be learned by this run.
    """
    state = dict(init.model_state)
    old = np.asarray(state["transformer.wte.weight"])  # (V_old, C)
    wte = model.transformer.wte.weight.data.copy()  # (V_new, C): fresh draws
    if old.shape[0] > wte.shape[0] or old.shape[1] != wte.shape[1]:
        raise ValueError(f"init_from: the checkpoint's wte has shape {old.shape}, the model's {wte.shape}")
    wte[:old.shape[0]] = old
    state["transformer.wte.weight"] = wte
    if "lm_head.weight" in state:
        state["lm_head.weight"] = wte  # tied: one matrix under two names
    model.load_state_dict(state)
    return wte.shape[0] - old.shape[0]


def check_corpus_coverage(prepared, tokenizer, config):
    """ValueError when more than tasks.MAX_UNKNOWN_FRACTION of the corpus is <unk> for the checkpoint's
    vocabulary: that text would train the model to predict "unknown character" over and over."""
    unk = getattr(tokenizer, "unk_id", None)
    if unk is None:  # byte-level BPE encodes every text
        return 0.0
    ids = np.concatenate([prepared["train"], prepared["val"]])
    fraction = float((ids == unk).mean())
    if fraction > MAX_UNKNOWN_FRACTION:
        raise ValueError(f"corpus {config.corpus!r}: {fraction:.1%} of its characters are not in the checkpoint's "
                         f"vocabulary (more than {MAX_UNKNOWN_FRACTION:.0%}); widen it with --vocab-extra "
                         f"{config.corpus} (vocab_extra=...): the new characters get new embedding rows")
    return fraction


def check_sample_prompt(prompt, tokenizer):
    """ValueError when the sample prompt holds characters the vocabulary does not know (checked before training)."""
    unk = getattr(tokenizer, "unk_id", None)
    if unk is None:
        return
    unknown = sorted({ch for ch in prompt if tokenizer.encode(ch)[0] == unk})
    if unknown:
        raise ValueError(f"sample_prompt {prompt!r} holds characters the vocabulary does not know: "
                         f"{', '.join(map(repr, unknown))}; pass --sample-prompt with text from the corpus")


# ----------------------------------------------------------------------------------------------------
# The course's shared base models
# ----------------------------------------------------------------------------------------------------

# One pretrained model shared by notebooks 05-09 and `python -m tinyft claims`, so their numbers describe
# the same model. "base": as strong as about ten minutes on 2 cores allows, with a 256-token context so a
# demonstration and a passage fit a prompt whole; "large": about three times the parameters, trained on
# the same tokens (the larger generic model of claim C5); "tiny": seconds, for tests and --quick runs.
COURSE_PRESETS = {
    "tiny": dict(n_layer=1, n_head=2, n_embd=32, block_size=128, batch_size=8, steps=80, warmup_steps=8,
                 eval_every=40, eval_batches=4, checkpoint_every=10_000),
    "base": dict(n_layer=4, n_head=4, n_embd=128, block_size=256, batch_size=8, steps=3000),
    "large": dict(n_layer=6, n_head=6, n_embd=192, block_size=256, batch_size=8, steps=3000),
}


def course_config(preset="base", cache_dir=None):
    """The PretrainConfig of a course preset, its `out` in `cache_dir` (default: data.default_cache_dir()/course)."""
    if preset not in COURSE_PRESETS:
        raise ValueError(f"preset: unknown course model {preset!r}; valid: {', '.join(COURSE_PRESETS)}")
    root = cache_dir if cache_dir is not None else os.path.join(data.default_cache_dir(), "course")
    return PretrainConfig(seed=0, out=os.path.join(root, preset), **COURSE_PRESETS[preset])


def course_model(preset="base", cache_dir=None, progress=False, log=print):
    """The path of a course model's checkpoint, pretrained on first use and read back afterwards.

    Deterministic (seed 0, the default corpus snapshot): every student gets the same model. A finished run
    in the cache returns at once (resume="auto"); an interrupted one continues where it stopped.
    """
    config = course_config(preset, cache_dir)
    path = os.path.join(config.out, CHECKPOINT_NAME)
    if not os.path.exists(path):
        log(f"pretraining the course's {preset!r} model once into {config.out} (later calls read it back)")
    pretrain(config, resume="auto", progress=progress, log=log)
    return path
