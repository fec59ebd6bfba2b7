"""The command line: `python -m tinyft <command> --help`.

Commands:
  pretrain    pretrain a small GPT on the offline default corpus (or your text), with checkpoints
  finetune    adapt a pretrained checkpoint to a specialized task with a chosen strategy
  forgetting  sweep strategies x learning rates x mitigations; measure target gain and forgetting
  demo        the whole story: pretrain -> fine-tune -> forgetting table (--engine: the engine alone)
Shared flags use nanoGPT's words: --n-layer --n-head --n-embd --block-size --batch-size --lr --steps
--seed --out. `--json` prints a machine-readable summary as the last line of standard output.
"""

import argparse
import json
import sys

from .checkpoint import CheckpointError
from .finetune import add_finetune_arguments, run_finetune_cli
from .forgetting import add_forgetting_arguments, run_forgetting_cli
from .pretrain import add_pretrain_arguments, run_pretrain_cli


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
    pretrain.set_defaults(run=run_pretrain_cli)

    finetune = commands.add_parser(
        "finetune", help="fine-tune a pretrained checkpoint on a specialized task",
        description="Adapt a pretrained checkpoint to a small specialized task (code language modeling, text-kind "
                    "classification, or name -> description instructions) with a chosen strategy: full, head, "
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
    demo.add_argument("--pretrain-steps", type=int, default=900, help="pretraining steps (default: %(default)s)")
    demo.add_argument("--steps", type=int, default=200, help="fine-tuning steps per strategy (default: %(default)s)")
    demo.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--out", default="runs/demo", help="folder for checkpoints and tables (default: %(default)s)")
    demo.add_argument("--engine", action="store_true",
                      help="instead: train a 2-16-16-2 MLP on two moons with the engine and plain SGD")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    demo.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    demo.set_defaults(run=run_demo)
    return parser


def run_demo(args):
    from .demo import run_demo as demo, run_engine_demo

    if args.steps < 1 or args.pretrain_steps < 1:
        raise ValueError(f"--steps and --pretrain-steps must be at least 1, got {args.steps}, {args.pretrain_steps}")
    if args.engine:
        result = run_engine_demo(seed=args.seed)
        summary = {"accuracy": result["accuracy"], "final_loss": result["history"][-1]["loss"],
                   "seconds": round(result["seconds"], 3)}
    else:
        result = demo(out=args.out, pretrain_steps=args.pretrain_steps, finetune_steps=args.steps, lr=args.lr,
                      seed=args.seed, progress=not args.no_progress)
        keys = ("strategy", "trainable_params", "target_before", "target_after", "source_before", "source_after",
                "forgetting", "wall_s")
        summary = {"pretrain": result["pretrain"], "total_params": result["total_params"],
                   "runs": [{k: r[k] for k in keys} for r in result["runs"]], "seconds": round(result["seconds"], 1)}
    if args.json:
        print(json.dumps(summary))


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, CheckpointError) as err:  # bad input: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
