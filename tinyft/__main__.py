"""The command line: `python -m tinyft <command> --help`.

Commands:
  pretrain    pretrain a small GPT on the offline default corpus (or your text), with checkpoints
  demo        the engine training a small network, in seconds
Shared flags use nanoGPT's words: --n-layer --n-head --n-embd --block-size --batch-size --lr --steps
--seed --out. `--json` prints a machine-readable summary as the last line of standard output.
"""

import argparse
import json
import sys


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
                    "continue with --resume). The defaults finish in a few minutes on a 2-core laptop.")
    add_pretrain_arguments(pretrain)
    pretrain.set_defaults(run=run_pretrain)

    demo = commands.add_parser("demo", help="train a small network with the engine and print what it learned",
                               description="Train a 2-16-16-2 MLP on two moons with tinyft's autograd engine "
                                           "and plain SGD; print the loss as it falls and the final accuracy.")
    demo.add_argument("--steps", type=int, default=500, help="SGD steps (default: %(default)s)")
    demo.add_argument("--lr", type=float, default=0.5, help="learning rate (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    demo.set_defaults(run=run_demo)
    return parser


def add_pretrain_arguments(parser):
    from .pretrain import PretrainConfig

    d = PretrainConfig()
    model = parser.add_argument_group("model")
    model.add_argument("--n-layer", type=int, default=d.n_layer, help="transformer blocks (default: %(default)s)")
    model.add_argument("--n-head", type=int, default=d.n_head, help="attention heads (default: %(default)s)")
    model.add_argument("--n-embd", type=int, default=d.n_embd, help="embedding width (default: %(default)s)")
    model.add_argument("--block-size", type=int, default=d.block_size, help="context length in tokens (default: %(default)s)")
    model.add_argument("--dropout", type=float, default=d.dropout, help="dropout probability (default: %(default)s)")
    data = parser.add_argument_group("data")
    data.add_argument("--corpus", default=d.corpus,
                      help="'broad' (default), 'stdlib_code', or a path to your own text file or folder")
    data.add_argument("--tokenizer", choices=("char", "bpe"), default=d.tokenizer, help="(default: %(default)s)")
    data.add_argument("--bpe-vocab-size", type=int, default=d.bpe_vocab_size, help="BPE vocabulary size (default: %(default)s)")
    train = parser.add_argument_group("training")
    train.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per step (default: %(default)s)")
    train.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default: %(default)s)")
    train.add_argument("--min-lr", type=float, default=d.min_lr, help="learning rate at the end of the cosine (default: %(default)s)")
    train.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="(default: %(default)s)")
    train.add_argument("--steps", type=int, default=d.steps, help="optimizer steps (default: %(default)s)")
    train.add_argument("--eval-every", type=int, default=d.eval_every, help="evaluate every N steps (default: %(default)s)")
    train.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="(default: %(default)s)")
    train.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default=d.out, help="folder for ckpt.npz and history.jsonl (default: %(default)s)")
    out.add_argument("--resume", action="store_true", help="continue from --out/ckpt.npz, bit-identically")
    out.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    out.add_argument("--json", action="store_true", help="print a JSON summary as the last line")


def run_pretrain(args):
    from .pretrain import PretrainConfig, bits_per_char, pretrain

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


def run_demo(args):
    from .demo import run_engine_demo

    if args.steps < 1:
        raise SystemExit(f"--steps must be at least 1, got {args.steps}")
    result = run_engine_demo(steps=args.steps, lr=args.lr, seed=args.seed)
    if args.json:
        print(json.dumps({"accuracy": result["accuracy"], "final_loss": result["history"][-1]["loss"],
                          "seconds": round(result["seconds"], 3)}))


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except ValueError as err:  # bad input: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
