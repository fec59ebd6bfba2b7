"""The command line: `python -m tinyft <command> --help`. The only file that knows argparse.

Map of this file:
  pretrain    add_pretrain_arguments, run_pretrain_cli      (pretrain.py)
  finetune    add_finetune_arguments, load_for_task, run_finetune_cli      (finetune.py, baselines.py)
  forgetting  add_forgetting_arguments, run_forgetting_cli  (experiments.run_sweep and its tables)
  demo        add_demo_arguments, run_demo_cli              (demo.py: pretrain -> fine-tune -> forgetting)
  claims      add_claims_arguments, run_claims_cli          (claims.py: every claim over seeds, with intervals)
  export      add_export_arguments, run_export_cli          (export.py: to nanoGPT's ckpt.pt or safetensors)
  import      add_import_arguments, run_import_cli          (export.py: from nanoGPT's ckpt.pt or safetensors)
  your data   add_data_arguments, task_for_cli              (tasks.task_from_path: finetune/forgetting --data)
  build_parser, main: one subcommand each; bad input prints one line `error: ...` and exits with 2
Shared flags use nanoGPT's words: --n-layer --n-head --n-embd --block-size --batch-size --lr --steps
--seed --out. `--json` prints a machine-readable summary as the last line of standard output.
"""

import argparse
import dataclasses
import json
import os
import sys
import warnings

from . import checkpoint, claims, export, interchange
from .baselines import compare_costs, pretraining_cost, task_baselines
from .checkpoint import CheckpointError
from .demo import run_demo, run_engine_demo
from .experiments import PARETO_JSON, RUNS_CSV, RUNS_JSON, format_table, run_sweep, summarize_wise
from .finetune import STRATEGIES, FinetuneConfig, check_model_fits_task, finetune, load_finetuned, task_metric
from .finetune import SPLITS as FINETUNE_SPLITS
from .forgetting import MITIGATIONS
from .lora import LORA_TARGETS
from .pretrain import PretrainConfig, pretrain
from .tasks import build_task, task_from_path
from .tokenizers import tokenizer_from_dict


def _csv_list(kind, convert=str):
    def parse(text):
        try:
            items = [convert(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind}, got {text!r}") from None
        if not items:
            raise argparse.ArgumentTypeError(f"expected at least one {kind}")
        return items
    return parse

# ----------------------------------------------------------------------------------------------------
# `python -m tinyft pretrain`
# ----------------------------------------------------------------------------------------------------


def add_pretrain_arguments(parser):
    d = PretrainConfig()
    shape = parser.add_argument_group("model")
    shape.add_argument("--n-layer", type=int, default=d.n_layer, help="transformer blocks (default: %(default)s)")
    shape.add_argument("--n-head", type=int, default=d.n_head, help="attention heads (default: %(default)s)")
    shape.add_argument("--n-embd", type=int, default=d.n_embd, help="embedding width (default: %(default)s)")
    shape.add_argument("--block-size", type=int, default=d.block_size, help="context length in tokens (default: %(default)s)")
    shape.add_argument("--dropout", type=float, default=d.dropout, help="dropout probability (default: %(default)s)")
    shape.add_argument("--gelu", choices=("tanh", "exact"), default=d.gelu,
                       help="the MLP's GELU: 'tanh' (GPT-2's approximation) or 'exact' (x Phi(x), nanoGPT's nn.GELU(): "
                            "use it for a model you will export to nanoGPT) (default: %(default)s)")
    source = parser.add_argument_group("data")
    source.add_argument("--corpus", default=d.corpus,
                      help="'broad' (default), 'stdlib_code', or a path to your own text file or folder")
    source.add_argument("--tokenizer", choices=("char", "bpe"), default=d.tokenizer, help="(default: %(default)s)")
    source.add_argument("--bpe-vocab-size", type=int, default=d.bpe_vocab_size, help="BPE vocabulary size (default: %(default)s)")
    source.add_argument("--init-from", metavar="CKPT", default=None,
                        help="continued (domain-adaptive) pretraining: start from this checkpoint's weights and "
                             "tokenizer, with a fresh optimizer and schedule, on --corpus. Its architecture wins: "
                             "leave --n-layer --n-head --n-embd --block-size --gelu --tokenizer out")
    source.add_argument("--vocab-extra", metavar="PATH", default=None,
                        help="a text file or folder whose characters join the character vocabulary (with "
                             "--init-from: new embedding rows, the old ids unchanged)")
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
    output.add_argument("--sample-prompt", metavar="TEXT", default=d.sample_prompt,
                        help="the text the final sample continues (default: %(default)r)")
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
        out=args.out, gelu=args.gelu, init_from=args.init_from, vocab_extra=args.vocab_extra,
        sample_prompt=args.sample_prompt)
    result = pretrain(config, resume=args.resume, progress=not args.no_progress)
    s = result.summary()
    s.update(init_from=args.init_from, vocab_size=result.tokenizer.vocab_size)
    print(f"steps {s['steps']}, {s['tokens_per_s']:,.0f} tokens/s, {s['wall_s']:.0f} s of training")
    print(f"train loss {s['final_train_loss']:.3f}, validation loss {s['final_val_loss']:.3f} nats/token "
          f"({s['final_val_bits_per_char']:.3f} bits/char); unigram baseline {s['unigram_val_loss']:.3f}")
    print(f"checkpoint: {s['checkpoint']}")
    print("sample:\n" + result.sample)
    if args.json:
        print(json.dumps(s))
    return 130 if result.interrupted else 0

# ----------------------------------------------------------------------------------------------------
# `python -m tinyft finetune`
# ----------------------------------------------------------------------------------------------------


def add_finetune_arguments(parser):
    d = FinetuneConfig()
    parser.add_argument("--from", dest="from_ckpt", required=True, metavar="CKPT",
                        help="the pretrained checkpoint (from `python -m tinyft pretrain`)")
    what = parser.add_argument_group("task and strategy")
    what.add_argument("--task", default=None, help="a built-in task: 'code' (language modeling on standard-library "
                      "source, the default), 'kind' or 'order' (classification) or 'describe' (instruction); "
                      "or --data for your own")
    what.add_argument("--strategy", default=d.strategy, choices=STRATEGIES, help="what trains (default: %(default)s)")
    what.add_argument("--k", type=int, default=d.k, help="last_k: how many last blocks train (default: %(default)s)")
    what.add_argument("--lora-rank", type=int, default=d.lora_rank, help="(default: %(default)s)")
    what.add_argument("--lora-alpha", type=float, default=d.lora_alpha, help="(default: %(default)s)")
    what.add_argument("--lora-targets", default=",".join(d.lora_targets),
                      help=f"comma-separated Linear names, from {', '.join(LORA_TARGETS)} (default: %(default)s)")
    what.add_argument("--lora-save", choices=("adapter", "merged"), default=d.lora_save, help="(default: %(default)s)")
    what.add_argument("--lp-steps", type=int, default=d.lp_steps,
                      help="lp_ft: linear-probe steps (default: %(default)s)")
    what.add_argument("--classifier", choices=("label_tokens", "head"), default=d.classifier,
                      help="classification: score label tokens, or train a new head (default: %(default)s)")
    data_group = parser.add_argument_group("data")
    add_data_arguments(data_group)
    data_group.add_argument("--n-examples", type=int, default=d.n_examples,
                            help="built-in tasks: training examples (default: %(default)s)")
    data_group.add_argument("--label-noise", type=float, default=d.label_noise,
                            help="built-in classification tasks (default: %(default)s)")
    data_group.add_argument("--imbalance", type=float, default=d.imbalance,
                            help="built-in classification tasks (default: %(default)s)")
    train = parser.add_argument_group("training")
    train.add_argument("--lr", type=float, default=d.lr, help="peak learning rate of the body (default: %(default)s)")
    train.add_argument("--head-lr", type=float, default=None, help="learning rate of the output layer (default: --lr)")
    train.add_argument("--layer-decay", type=float, default=d.layer_decay,
                       help="block i gets lr * decay^(n_layer - i) (default: %(default)s = none)")
    train.add_argument("--steps", type=int, default=d.steps, help="optimizer steps (default: %(default)s)")
    train.add_argument("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    train.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="(default: %(default)s)")
    train.add_argument("--weight-decay", type=float, default=d.weight_decay, help="(default: %(default)s)")
    train.add_argument("--eval-every", type=int, default=d.eval_every, help="(default: %(default)s)")
    train.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default=d.out, help="folder for ckpt.npz and history.jsonl (default: %(default)s)")
    out.add_argument("--baselines", action="store_true",
                     help="also train from scratch on the same budget, prompt without training, bag of characters")
    out.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    out.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def add_data_arguments(group):
    """--data, --shifted-data and --labels (finetune and forgetting): fine-tune on your own data."""
    group.add_argument("--data", metavar="PATH", default=None,
                       help="your own data instead of --task: a text file or folder (language modeling: split "
                            "into contiguous train/val/test chunks), or labelled examples in a .jsonl file "
                            "({\"text\": ..., \"label\": ...} per line) or a .csv file (columns text,label) "
                            "(classification). The checkpoint's vocabulary must cover it (docs/tasks.md)")
    group.add_argument("--shifted-data", metavar="PATH", default=None,
                       help="with --data: the same kind of data from elsewhere, measured as the shifted split")
    group.add_argument("--labels", action="store_true",
                       help="with --data: read it as labelled examples whatever its extension (JSONL when it starts "
                            "with '{', else CSV); .jsonl, .json and .csv files are read so without it")


def check_task_arguments(args, defaults=None):
    """ValueError for --task with --data, --shifted-data or --labels without --data, and the built-in tasks'
    knobs (--label-noise, --imbalance) with --data."""
    if args.data is None:
        for flag, value in (("--shifted-data", args.shifted_data), ("--labels", args.labels or None)):
            if value is not None:
                raise ValueError(f"{flag} needs --data PATH (your own data); the built-in tasks bring their own")
        return
    if args.task is not None:
        raise ValueError(f"--task {args.task} and --data are mutually exclusive: --task picks a built-in task, "
                         "--data fine-tunes on your own file")
    for flag, name, default in (("--label-noise", "label_noise", 0.0), ("--imbalance", "imbalance", 1.0)):
        if getattr(args, name, default) != default:
            raise ValueError(f"{flag} applies to the built-in classification tasks ('kind', 'order'), not to --data")


def task_for_cli(args, tokenizer, block_size, seed, n_examples=1000):
    """The task a command asks for: --data (tasks.task_from_path) or --task (build_task, 'code' by default)."""
    check_task_arguments(args)
    if args.data is not None:
        return task_from_path(args.data, tokenizer, block_size, shifted=args.shifted_data,
                              labelled=True if args.labels else None, seed=seed)
    return build_task(args.task or "code", tokenizer, n_examples=n_examples, seed=seed, block_size=block_size,
                      label_noise=getattr(args, "label_noise", 0.0), imbalance=getattr(args, "imbalance", 1.0))


def load_base(path):
    """(model, tokenizer, meta) of a checkpoint to fine-tune; a ValueError when it holds no usable tokenizer."""
    ckpt = checkpoint.load(path)
    if not isinstance(ckpt.meta.get("tokenizer"), dict):
        raise checkpoint.CheckpointError(f"{path!r} holds no tokenizer, so task text cannot be turned into its ids; "
                                         "use a checkpoint written by `python -m tinyft pretrain`")
    tokenizer = tokenizer_from_dict(ckpt.meta["tokenizer"])
    model = load_finetuned(path) if "finetune" in ckpt.meta else checkpoint.load_model(path)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"{path!r}: its tokenizer has {tokenizer.vocab_size} ids but the model's vocabulary has "
                         f"{model.config.vocab_size}; the checkpoint is inconsistent")
    return model, tokenizer, ckpt.meta


def load_for_task(path, task_name, n_examples, seed, label_noise=0.0, imbalance=1.0):
    """(model, tokenizer, task, meta) from a pretrained checkpoint, with the task built on its tokenizer."""
    model, tokenizer, meta = load_base(path)
    task = build_task(task_name, tokenizer, n_examples=n_examples, seed=seed, block_size=model.config.block_size,
                      label_noise=label_noise, imbalance=imbalance)
    check_model_fits_task(model, task)
    return model, tokenizer, task, meta


def run_finetune_cli(args):
    """`python -m tinyft finetune`: fine-tune, print a readable report; under --json the summary is the last line."""
    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    config = FinetuneConfig(
        task=args.task, strategy=args.strategy, lr=args.lr, head_lr=args.head_lr, layer_decay=args.layer_decay,
        steps=args.steps, batch_size=args.batch_size, n_examples=args.n_examples, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, eval_every=args.eval_every, k=args.k, lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, lora_targets=targets, lora_save=args.lora_save, lp_steps=args.lp_steps,
        classifier=args.classifier, label_noise=args.label_noise, imbalance=args.imbalance, seed=args.seed,
        out=args.out)
    config.validate()
    check_task_arguments(args)
    model, tokenizer, meta = load_base(args.from_ckpt)
    task = task_for_cli(args, tokenizer, model.config.block_size, args.seed, args.n_examples)
    check_model_fits_task(model, task)
    result = finetune(model, task, config, progress=not args.no_progress, base_checkpoint=args.from_ckpt,
                      tokenizer=tokenizer)
    s = result.summary()
    s.update(task=task.name, task_type=task.task_type, data=args.data)
    better = "higher" if s["higher_is_better"] else "lower"
    if config.strategy == "lp_ft":
        print(result.report)
    print(f"task {task.name!r}: {s['metric']} ({better} is better)")
    print(f"  {'split':<8} {'before':>9} {'after':>9}")
    for split in FINETUNE_SPLITS:
        if split not in result.before:  # your own data without --shifted-data has no shifted split
            continue
        print(f"  {split:<8} {task_metric(result.before[split], task):>9.4f} {task_metric(result.after[split], task):>9.4f}")
    c = result.cost
    pt = pretraining_cost(meta, result.model) if meta.get("pretrain_config") else None
    print(f"cost: {c['tokens']:,} tokens, {c['flops']:.3g} FLOPs (estimated), optimizer state "
          f"{c['optimizer_state_bytes'] / 1024:,.1f} KiB, {s['wall_s']:.1f} s")
    if pt:
        ratio = compare_costs(c, pt)
        s["cost_vs_pretraining"] = ratio
        print(f"  pretraining: {pt['tokens']:,} tokens, {pt['flops']:.3g} FLOPs: fine-tuning used "
              f"{100 * (ratio['flops_fraction'] or 0):.2f}% of its FLOPs")
    if args.baselines:
        base = task_baselines(checkpoint.load_model(args.from_ckpt), task, config)
        s["baselines"] = base
        print("baselines on the same data and budget (test split): "
              + ", ".join(f"{k} {v}" if not isinstance(v, float) else f"{k} {v:.4f}" for k, v in base.items()))
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    if args.json:
        print(json.dumps(s))
    return 130 if result.interrupted else 0

# ----------------------------------------------------------------------------------------------------
# `python -m tinyft forgetting`
# ----------------------------------------------------------------------------------------------------


def add_forgetting_arguments(parser):
    """The flags of `python -m tinyft forgetting` (defaults: a sweep of a few minutes on 2 cores)."""
    parser.add_argument("--from", dest="from_ckpt", metavar="CKPT", default=None,
                        help="pretrained checkpoint (ckpt.npz from `python -m tinyft pretrain`); required")
    parser.add_argument("--task", default=None,
                        help="built-in fine-tuning task: code (LM on stdlib source, the default), kind, order, "
                             "describe; or --data for your own")
    add_data_arguments(parser.add_argument_group("your own data"))
    parser.add_argument("--strategies", type=_csv_list("strategies"), default=["full", "lora"],
                        help=f"comma-separated, from {', '.join(STRATEGIES)} (default: full,lora)")
    parser.add_argument("--lrs", type=_csv_list("learning rates", float), default=[1e-3, 1e-4],
                        help="comma-separated peak learning rates (default: 1e-3,1e-4)")
    parser.add_argument("--mitigations", type=_csv_list("mitigations"), default=["none", "replay"],
                        help=f"comma-separated, from {', '.join(MITIGATIONS)} (default: none,replay)")
    parser.add_argument("--replay-fraction", type=float, default=0.25,
                        help="replay: share of each batch drawn from the source (default: %(default)s)")
    parser.add_argument("--ewc-lambda", type=float, default=1e4, help="EWC strength lambda (default: %(default)s)")
    parser.add_argument("--l2sp-alpha", type=float, default=0.3, help="L2-SP strength alpha (default: %(default)s)")
    parser.add_argument("--wise-alphas", type=_csv_list("alphas", float), default=[],
                        help="also score WiSE-FT interpolations at these alphas, e.g. 0,0.25,0.5,0.75,1")
    parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps per run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per setting: seed, seed+1, ... (default: %(default)s)")
    parser.add_argument("--out", default="runs/forgetting",
                        help="folder for runs.csv, runs.json, pareto.json; rerun to resume (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run_forgetting_cli(args):
    """`python -m tinyft forgetting`: run the sweep, print the table, and under --json a summary last."""
    if not args.from_ckpt:
        raise ValueError("--from CKPT is required: the pretrained checkpoint to fine-tune. "
                         "Make one first with `python -m tinyft pretrain` (it writes runs/pretrain/ckpt.npz)")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    check_task_arguments(args)
    task = args.task or "code"
    if args.data is not None:  # built once here, on the checkpoint's tokenizer; run_sweep takes the Task
        model, tokenizer, _ = load_base(args.from_ckpt)
        task = task_for_cli(args, tokenizer, model.config.block_size, args.seed)
        check_model_fits_task(model, task)
    result = run_sweep(args.from_ckpt, strategies=args.strategies, lrs=args.lrs, mitigations=args.mitigations,
                       seeds=list(range(args.seed, args.seed + args.seeds)), steps=args.steps, out=args.out,
                       task=task, batch_size=args.batch_size, replay_fraction=args.replay_fraction,
                       ewc_lambda=args.ewc_lambda, l2sp_alpha=args.l2sp_alpha, wise_alphas=args.wise_alphas,
                       progress=not args.no_progress)
    runs = result["runs"]
    metric = runs[0]["metric"] if runs else "?"
    print(f"target gain: {metric} on the task's test split (> 0 learned); forgetting: source loss after - "
          "before, nats/token (> 0 forgot)")
    print(format_table(result["summary"]))
    wise = summarize_wise(runs)
    if wise:
        print("WiSE-FT after the fact, theta = (1 - alpha) theta_pre + alpha theta_ft (means over seeds):")
        print(format_table(wise, first="interpolated run"))
    print(f"Pareto-optimal: {', '.join(result['pareto']['pareto_optimal'])}")
    print(f"written: {os.path.join(args.out, RUNS_CSV)}, {RUNS_JSON}, {PARETO_JSON}")
    if args.json:
        keep = ("strategy", "lr", "mitigation", "seed", "metric", "target_before", "target_after", "target_gain",
                "source_before", "source_after", "forgetting", "trainable_params", "weight_drift", "delta_erank",
                "wise_ft", "wall_s")
        print(json.dumps({"runs": [{k: r[k] for k in keep if k in r} for r in runs],
                          "summary": result["summary"], "pareto_optimal": result["pareto"]["pareto_optimal"],
                          "out": args.out, "task": task if isinstance(task, str) else task.name, "data": args.data}))
    return 0

# ----------------------------------------------------------------------------------------------------
# `python -m tinyft demo`
# ----------------------------------------------------------------------------------------------------


def add_demo_arguments(parser):
    """The flags of `python -m tinyft demo`."""
    parser.add_argument("--pretrain-steps", type=int, default=900, help="pretraining steps (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps per strategy (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--out", default="runs/demo", help="folder for checkpoints and tables (default: %(default)s)")
    parser.add_argument("--engine", action="store_true",
                      help="instead: train a 2-16-16-2 MLP on two moons with the engine and plain SGD")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run_demo_cli(args):
    """`python -m tinyft demo`: the whole story (or, with --engine, the engine alone); --json prints a summary last."""
    if args.steps < 1 or args.pretrain_steps < 1:
        raise ValueError(f"--steps and --pretrain-steps must be at least 1, got {args.steps}, {args.pretrain_steps}")
    if args.engine:
        result = run_engine_demo(seed=args.seed)
        summary = {"accuracy": result["accuracy"], "final_loss": result["history"][-1]["loss"],
                   "seconds": round(result["seconds"], 3)}
    else:
        result = run_demo(out=args.out, pretrain_steps=args.pretrain_steps, finetune_steps=args.steps, lr=args.lr,
                      seed=args.seed, progress=not args.no_progress)
        keys = ("strategy", "trainable_params", "target_before", "target_after", "source_before", "source_after",
                "forgetting", "wall_s")
        summary = {"pretrain": result["pretrain"], "total_params": result["total_params"],
                   "runs": [{k: r[k] for k in keys} for r in result["runs"]], "seconds": round(result["seconds"], 1)}
    if args.json:
        print(json.dumps(summary))

def add_claims_arguments(parser):
    """The flags of `python -m tinyft claims`."""
    parser.add_argument("--only", type=_csv_list("claim ids"), default=None,
                        help="comma-separated claim ids, e.g. C1,C3 (default: all of C1..C11)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per experiment: 0, 1, ..., N-1 (default: 3, or 2 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings: the 'tiny' base model and 30-step runs; C1 and C3 take a few minutes")
    parser.add_argument("--out", default="runs/claims",
                        help="folder for claims.json, written after each claim; rerun to resume (default: %(default)s)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown instead (the table of docs/claims.md)")
    parser.add_argument("--json", action="store_true", help="print the claims as one JSON line last")


def run_claims_cli(args):
    """`python -m tinyft claims`: run the experiments, print the table (progress goes to standard error)."""
    settings = claims.QUICK if args.quick else claims.FULL
    ids = claims.check_claim_ids(args.only) if args.only is not None else list(claims.CLAIMS)
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError(f"--seeds must be at least 1 (1 gives no interval and no verdict), got {args.seeds}")
        settings = dataclasses.replace(settings, seeds=tuple(range(args.seeds)))
    if os.path.isfile(args.out):
        raise ValueError(f"--out {args.out!r} is a file; pass a folder for claims.json")
    rows = claims.run_claims(ids, settings, out=args.out, log=lambda *a: print(*a, file=sys.stderr))
    print(claims.format_claims_markdown(rows) if args.markdown else claims.format_claims(rows))
    print(f"written: {os.path.join(args.out, claims.CLAIMS_JSON)}")
    if args.json:
        keys = ("id", "claim", "metric", "value", "ci95", "seeds", "verdict")
        print(json.dumps({"claims": [{k: r[k] for k in keys} for r in rows]}))
    return 0


# ----------------------------------------------------------------------------------------------------
# `python -m tinyft export` and `python -m tinyft import` (thin wrappers: export.py checks everything)
# ----------------------------------------------------------------------------------------------------


# interchange names its Python arguments; on the command line the message should name the flags
_FLAG_WORDS = (("overwrite=True", "--overwrite"), ("vocab=PATH", "--vocab PATH"))
_FLAG_ARGUMENTS = (("ckpt_path", "--from"), ("out_dir", "--out"), ("out_path", "--out"), ("path", "--from"),
                   ("vocab", "--vocab"), ("n_head", "--n-head"))


def _in_flag_words(err):
    """An InterchangeError's message with argument names replaced by the command line's flags."""
    text = str(err)
    for word, flag in _FLAG_WORDS:
        text = text.replace(word, flag)
    for argument, flag in _FLAG_ARGUMENTS:
        if text.startswith(argument + " ") or text.startswith(argument + ":"):
            text = flag + text[len(argument):]
            break
    return ValueError(text)


def add_export_arguments(parser):
    """The flags of `python -m tinyft export`."""
    parser.add_argument("--from", dest="from_ckpt", required=True, metavar="CKPT",
                        help="the tinyft checkpoint to export (ckpt.npz from pretrain, finetune or import; a LoRA "
                             "run must be saved with --lora-save merged)")
    parser.add_argument("--format", required=True, choices=("nanogpt", "safetensors"),
                        help="nanogpt: nanoGPT's out_dir (ckpt.pt with weights, AdamW moments, model_args, iter_num; "
                             "meta.pkl with a character vocabulary), needs PyTorch; safetensors: one .safetensors "
                             "file (nanoGPT's names, the config in its metadata), no PyTorch needed")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="nanogpt: the folder to write (e.g. out-tinyft); safetensors: the file (e.g. "
                             "model.safetensors)")
    parser.add_argument("--dataset", default="tinyft",
                        help="nanogpt: the dataset name in ckpt.pt's config (nanoGPT reads data/<dataset>/) "
                             "(default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files (never the input)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run_export_cli(args):
    """`python -m tinyft export`: write the files, print them and the notes; --json prints the summary last."""
    if args.format == "safetensors" and args.dataset != "tinyft":
        raise ValueError("--dataset applies to --format nanogpt only")
    with warnings.catch_warnings():  # the notes come back in the summary and are printed below, once
        warnings.simplefilter("ignore", interchange.InterchangeWarning)
        try:
            if args.format == "nanogpt":
                summary = export.export_nanogpt(args.from_ckpt, args.out, dataset=args.dataset,
                                                     overwrite=args.overwrite)
            else:
                summary = export.export_safetensors(args.from_ckpt, args.out, overwrite=args.overwrite)
        except interchange.InterchangeError as err:
            raise _in_flag_words(err) from None
    print(f"wrote ({args.format}, GELU {summary['gelu']}): " + ", ".join(summary["files"]))
    for note in summary["notes"]:
        print(f"note: {note}")
    if args.format == "nanogpt":
        print(f"continue in nanoGPT (docs/outgrow.md): python train.py {summary['nanogpt_flags']}")
    if args.json:
        print(json.dumps({"format": args.format, **summary}))
    return 0


def add_import_arguments(parser):
    """The flags of `python -m tinyft import`."""
    parser.add_argument("--from", dest="from_path", required=True, metavar="PATH",
                        help="nanoGPT's ckpt.pt (needs PyTorch; read with weights_only=True, '_orig_mod.' prefixes "
                             "stripped, attn.bias buffers dropped, float16/bfloat16 cast to float32 with a note) or a "
                             ".safetensors file")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the folder for the tinyft checkpoint (DIR/ckpt.npz, what `finetune --from` reads)")
    parser.add_argument("--vocab", metavar="PATH", default=None,
                        help="the vocabulary, when it is not beside --from: nanoGPT's data/<dataset>/meta.pkl or a "
                             "tinyft tokenizer .json")
    parser.add_argument("--n-head", type=int, default=None,
                        help="attention heads, only for a .safetensors file whose metadata does not say")
    parser.add_argument("--gelu", choices=("tanh", "exact"), default=None,
                        help="override the GELU (default: what the file says, else 'exact', nanoGPT's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DIR/ckpt.npz")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run_import_cli(args):
    """`python -m tinyft import`: write DIR/ckpt.npz, print what came across; --json prints the summary last."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", interchange.InterchangeWarning)
        try:
            summary = export.import_checkpoint(args.from_path, args.out, vocab=args.vocab, n_head=args.n_head,
                                                    gelu=args.gelu, overwrite=args.overwrite)
        except interchange.InterchangeError as err:
            raise _in_flag_words(err) from None
    c = summary["config"]
    print(f"wrote {summary['checkpoint']}: a GPT with n_layer={c['n_layer']}, n_head={c['n_head']}, "
          f"n_embd={c['n_embd']}, block_size={c['block_size']}, vocab_size={c['vocab_size']}, GELU {c['gelu']}; "
          f"step {summary['step']}, AdamW moments {'included' if summary['optimizer'] else 'none'}, vocabulary "
          f"from {summary['tokenizer_from']}")
    for note in summary["notes"]:
        print(f"note: {note}")
    print(f"fine-tune it: python -m tinyft finetune --from {summary['checkpoint']} --data YOUR_FILE")
    if args.json:
        print(json.dumps(summary))
    return 0


# ----------------------------------------------------------------------------------------------------
# The parser
# ----------------------------------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m tinyft",
        description="tinyft: learn how fine-tuning works by building every piece from scratch.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    pretrain = commands.add_parser(
        "pretrain", help="pretrain a small GPT on broad text",
        description="Pretrain a GPT on the offline default corpus (Python's language reference and standard "
                    "library docstrings) or your own text: AdamW with warmup and cosine decay, gradient "
                    "clipping, evaluation on a validation split, and checkpoints in --out (also on Ctrl-C; "
                    "continue with --resume). The defaults finish in a few minutes on a 2-core laptop. "
                    "--init-from CKPT continues pretraining a checkpoint on your --corpus (domain adaptation).")
    add_pretrain_arguments(pretrain)
    pretrain.set_defaults(run=run_pretrain_cli)

    finetune = commands.add_parser(
        "finetune", help="fine-tune a pretrained checkpoint on a specialized task",
        description="Adapt a pretrained checkpoint to a small specialized task (code language modeling, text-kind "
                    "or word-order classification, or name -> description instructions) or to your own data "
                    "(--data: a text file, or labelled examples in JSONL/CSV) with a chosen strategy: full, head, "
                    "last_k, embeddings_frozen, bitfit, layernorm, lora or lp_ft. Reports the task metric before "
                    "and after, the trainable fraction and the cost.")
    add_finetune_arguments(finetune)
    finetune.set_defaults(run=run_finetune_cli)

    forgetting = commands.add_parser(
        "forgetting", help="measure catastrophic forgetting: a sweep of strategies x lrs x mitigations",
        description="Fine-tune a pretrained checkpoint under several strategies, learning rates and mitigations "
                    "(replay, EWC, L2-SP), and measure for each run the target gain and the forgetting "
                    "(source-domain loss after - before). Writes runs.csv, runs.json and pareto.json in --out; "
                    "finished runs are not redone.")
    add_forgetting_arguments(forgetting)
    forgetting.set_defaults(run=run_forgetting_cli)

    demo = commands.add_parser(
        "demo", help="the whole story in a few minutes: pretrain -> fine-tune -> forgetting",
        description="Pretrain a small GPT on broad English text (Python's own documentation, offline), fine-tune "
                    "it on Python source code with three strategies (full, last block, LoRA), and print a table: "
                    "the code loss before and after, the broad-text loss before and after (forgetting), the "
                    "trainable fraction and the time. About 4 minutes on 2 cores. --engine instead runs the "
                    "autograd engine alone on a toy task, in a second.")
    add_demo_arguments(demo)
    demo.set_defaults(run=run_demo_cli)

    claims_parser = commands.add_parser(
        "claims", help="run every claim about fine-tuning as an experiment: seeds, 95%% intervals, verdicts",
        description="Run the experiments behind the claims C1..C11 of docs/claims.md on the course's shared base "
                    "model (pretrained once and cached): fine-tuning against training from scratch, compute, "
                    "learning rates, strategies, a larger generic model, prompting, forgetting and its "
                    "mitigations, data quality, data size, shifted data and hyperparameters. Each row gives the "
                    "effect's mean over seeds, its 95% Student's t interval and a verdict: supported (the "
                    "interval excludes no effect), not supported (it excludes the claimed direction) or within "
                    "noise. Choices are made on validation splits; numbers come from test splits. The full run "
                    "takes hours on 2 cores; --quick takes minutes.")
    add_claims_arguments(claims_parser)
    claims_parser.set_defaults(run=run_claims_cli)

    export_parser = commands.add_parser(
        "export", help="write a checkpoint for nanoGPT (PyTorch) or as safetensors",
        description="Move a tinyft checkpoint to nanoGPT (its out_dir: ckpt.pt and meta.pkl, which nanoGPT's own "
                    "train.py --init_from=resume and sample.py read; needs PyTorch) or to a .safetensors file "
                    "(Hugging Face's format, no PyTorch). The parameter names are nanoGPT's already; a model "
                    "pretrained with --gelu exact computes in nanoGPT the same logits (float32 rounding), a tanh "
                    "model's differ slightly (a note says so). Never writes over its input, nor over an existing "
                    "file without --overwrite. docs/outgrow.md goes on to one GPU or many.")
    add_export_arguments(export_parser)
    export_parser.set_defaults(run=run_export_cli)

    import_parser = commands.add_parser(
        "import", help="bring a nanoGPT ckpt.pt or a .safetensors file back as a tinyft checkpoint",
        description="Read nanoGPT's ckpt.pt (PyTorch, loaded with weights_only=True) or a .safetensors file and "
                    "write DIR/ckpt.npz, which `python -m tinyft finetune --from` accepts: the weights, AdamW's "
                    "moments when present, the step and the vocabulary (tinyft_tokenizer.json or meta.pkl beside "
                    "the file, or --vocab). What does not carry over exactly is printed as notes.")
    add_import_arguments(import_parser)
    import_parser.set_defaults(run=run_import_cli)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, CheckpointError) as err:  # bad input: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
