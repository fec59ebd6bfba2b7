"""Pretraining: teach a small GPT to predict the next token of broad text, one written-out step at a time.

Map of this file:
  PretrainConfig        every knob, with defaults that finish in a few minutes on a 2-core laptop
  prepare_data(...)     text -> tokenizer -> ids -> train / validation split, plus the baselines to beat
  estimate_loss(...)    mean loss on fixed validation batches (the same batches every time)
  pretrain(...)         the loop: batch -> forward -> loss -> backward -> clip -> step -> schedule,
                        with evaluation, checkpoints (also on Ctrl-C) and bit-identical resume
  add_pretrain_arguments, run_pretrain_cli     `python -m tinyft pretrain`
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
from .tokenizers import BPETokenizer, CharTokenizer, tokenizer_from_dict

CHECKPOINT_NAME = "ckpt.npz"
HISTORY_NAME = "history.jsonl"


@dataclass
class PretrainConfig:
    """What to train, on what, for how long. Field names follow nanoGPT where it has one."""

    corpus: str = "broad"  # a corpus name (data.CORPORA) or a path to your own text file or folder
    tokenizer: str = "char"  # "char" or "bpe"
    bpe_vocab_size: int = 512
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
    """Mean cross-entropy (nats per token) of `model` over `batches`, in eval mode."""
    was_training = model.training
    model.eval()
    losses = [model(x, y)[1].item() for x, y in batches]
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
    """history (a list of dicts) as JSON lines, written atomically (temp file, then rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def check_out_dir(out):
    """Create the output folder, or raise a ValueError that names it and says what to do."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out!r}: cannot create the folder ({err.strerror}); choose a writable folder") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out {out!r} is not writable; choose a folder you can write to")


def pretrain(config=None, resume=False, progress=True, log=print, _stop_after=None):
    """Pretrain a GPT as `config` says; return a PretrainResult (history for plots, final checkpoint).

    resume=True continues from `config.out`/ckpt.npz exactly where it stopped: weights, optimizer
    moments, the step counter and both random generators come back, so the continued run is
    bit-identical to one that was never interrupted. resume="auto" resumes when that checkpoint exists
    and starts fresh otherwise; a finished run then returns at once (notebooks use it as a cache). Ctrl-C saves a checkpoint and returns cleanly.
    `_stop_after` (tests only) raises KeyboardInterrupt after that many steps, as a user pressing Ctrl-C.
    """
    config = config or PretrainConfig()
    config.validate()
    check_out_dir(config.out)
    ckpt_path = os.path.join(config.out, CHECKPOINT_NAME)

    # --- 1. model, optimizer and data (fresh, or rebuilt from the checkpoint) ---------------------
    if resume not in (True, False, "auto"):
        raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
    if resume == "auto":
        resume = os.path.exists(ckpt_path)
    state = None
    if resume:
        if not os.path.exists(ckpt_path):
            raise ValueError(f"--resume: no checkpoint at {ckpt_path}; run once without --resume first")
        state = checkpoint.load(ckpt_path)
        saved = state.meta.get("pretrain_config", {})
        for key in ("corpus", "tokenizer", "block_size", "n_layer", "n_head", "n_embd", "gelu", "seed"):
            if key in saved and saved[key] != getattr(config, key):
                raise ValueError(f"--resume: the checkpoint was trained with {key}={saved[key]!r} but this run asks "
                                 f"for {getattr(config, key)!r}; use the same settings or a new --out")
    manual_seed(config.seed)
    tokenizer = tokenizer_from_dict(state.meta["tokenizer"]) if state else None
    prepared = prepare_data(config, tokenizer)
    tokenizer = prepared["tokenizer"]
    model_config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=config.block_size, n_layer=config.n_layer,
                             n_head=config.n_head, n_embd=config.n_embd, dropout=config.dropout, gelu=config.gelu)
    model = GPT(model_config)
    optimizer = optim.AdamW(optim.param_groups_for_weight_decay(model, config.weight_decay), lr=config.lr,
                            betas=(0.9, 0.95))
    batch_rng = np.random.default_rng(config.seed)  # draws the training windows
    val_batches = fixed_batches(prepared["val"], config.eval_batches, config.batch_size, config.block_size, seed=1234)
    history, start_step, train_seconds = [], 0, 0.0
    if state:
        checkpoint.restore(ckpt_path, model, optimizer)
        batch_rng.bit_generator.state = state.meta["batch_rng_state"]
        set_rng_state(state.meta["rng_state"])
        history, start_step = state.meta["history"], state.meta["step"]
        train_seconds = state.meta.get("train_seconds", 0.0)
        log(f"resumed from {ckpt_path} at step {start_step}")

    params = list(model.parameters())
    tokens_per_step = config.batch_size * config.block_size

    def save(step):
        checkpoint.save(ckpt_path, model, optimizer, step=step, tokenizer=tokenizer.to_dict(),
                        pretrain_config=dataclasses.asdict(config), history=history,
                        batch_rng_state=batch_rng.bit_generator.state, rng_state=get_rng_state(),
                        train_seconds=train_seconds, kind="pretrain")
        write_history(os.path.join(config.out, HISTORY_NAME), history)

    if start_step == 0:
        log(f"pretraining a {model.num_parameters():,}-parameter GPT on {config.corpus!r} "
            f"({prepared['chars']:,} characters, {len(prepared['train']):,} train / {len(prepared['val']):,} "
            f"validation tokens, {config.tokenizer} tokenizer with {tokenizer.vocab_size} ids); "
            f"unigram baseline {prepared['unigram_val_loss']:.3f} nats/token")

    # --- 2. the loop -------------------------------------------------------------------------------
    step, interrupted = start_step, False
    bar = tqdm(total=config.steps, initial=start_step, disable=not progress, desc="pretrain", unit="step")
    loss_value = float("nan")
    try:
        while step < config.steps:
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
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.1e}", tok_s=f"{tokens_per_step / dt:,.0f}",
                            **({"val": f"{row['val_loss']:.3f}"} if "val_loss" in row else {}))
            bar.update(1)
            if step % config.checkpoint_every == 0 and step < config.steps:
                save(step)  # periodic checkpoint
            if _stop_after is not None and step - start_step >= _stop_after:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    save(step)  # the last checkpoint: at the end, or where Ctrl-C stopped us
    if interrupted:
        log(f"interrupted at step {step}: checkpoint saved to {ckpt_path}; continue with --resume")

    # --- 3. report ---------------------------------------------------------------------------------
    final_val = history[-1]["val_loss"] if history and "val_loss" in history[-1] else estimate_loss(model, val_batches)
    prompt = tokenizer.encode("The ")[None, :]  # (1, t)
    sample = tokenizer.decode(model.generate(prompt, config.sample_tokens, temperature=0.8, seed=config.seed)[0])
    recent = [row["train_loss"] for row in history[-20:]]
    return PretrainResult(
        model=model, tokenizer=tokenizer, history=history, checkpoint=ckpt_path, steps=step,
        final_train_loss=float(np.mean(recent)) if recent else float("nan"), final_val_loss=final_val,
        unigram_val_loss=prepared["unigram_val_loss"], chars_per_token=prepared["chars_per_token"],
        tokens_per_s=tokens_per_step * step / train_seconds if train_seconds else 0.0,
        wall_s=train_seconds, sample=sample, interrupted=interrupted,
    )


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def add_pretrain_arguments(parser):
    d = PretrainConfig()
    shape = parser.add_argument_group("model")
    shape.add_argument("--n-layer", type=int, default=d.n_layer, help="transformer blocks (default: %(default)s)")
    shape.add_argument("--n-head", type=int, default=d.n_head, help="attention heads (default: %(default)s)")
    shape.add_argument("--n-embd", type=int, default=d.n_embd, help="embedding width (default: %(default)s)")
    shape.add_argument("--block-size", type=int, default=d.block_size, help="context length in tokens (default: %(default)s)")
    shape.add_argument("--dropout", type=float, default=d.dropout, help="dropout probability (default: %(default)s)")
    source = parser.add_argument_group("data")
    source.add_argument("--corpus", default=d.corpus,
                      help="'broad' (default), 'stdlib_code', or a path to your own text file or folder")
    source.add_argument("--tokenizer", choices=("char", "bpe"), default=d.tokenizer, help="(default: %(default)s)")
    source.add_argument("--bpe-vocab-size", type=int, default=d.bpe_vocab_size, help="BPE vocabulary size (default: %(default)s)")
    train = parser.add_argument_group("training")
    train.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per step (default: %(default)s)")
    train.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default: %(default)s)")
    train.add_argument("--min-lr", type=float, default=d.min_lr, help="learning rate at the end of the cosine (default: %(default)s)")
    train.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="(default: %(default)s)")
    train.add_argument("--steps", type=int, default=d.steps, help="optimizer steps (default: %(default)s)")
    train.add_argument("--eval-every", type=int, default=d.eval_every, help="evaluate every N steps (default: %(default)s)")
    train.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="(default: %(default)s)")
    train.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=d.out, help="folder for ckpt.npz and history.jsonl (default: %(default)s)")
    output.add_argument("--resume", action="store_true", help="continue from --out/ckpt.npz, bit-identically")
    output.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    output.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run_pretrain_cli(args):
    """`python -m tinyft pretrain`: train, print a readable report; under --json the summary is the last line."""
    config = PretrainConfig(
        corpus=args.corpus, tokenizer=args.tokenizer, bpe_vocab_size=args.bpe_vocab_size, n_layer=args.n_layer,
        n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size, dropout=args.dropout,
        batch_size=args.batch_size, lr=args.lr, min_lr=min(args.min_lr, args.lr), warmup_steps=args.warmup_steps,
        steps=args.steps, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, seed=args.seed,
        out=args.out)
    result = pretrain(config, resume=args.resume, progress=not args.no_progress)
    s = result.summary()
    print(f"steps {s['steps']}, {s['tokens_per_s']:,.0f} tokens/s, {s['wall_s']:.0f} s of training")
    print(f"train loss {s['final_train_loss']:.3f}, validation loss {s['final_val_loss']:.3f} nats/token "
          f"({s['final_val_bits_per_char']:.3f} bits/char); unigram baseline {s['unigram_val_loss']:.3f}")
    print(f"checkpoint: {s['checkpoint']}")
    print("sample:\n" + result.sample)
    if args.json:
        print(json.dumps(s))
    return 130 if result.interrupted else 0
