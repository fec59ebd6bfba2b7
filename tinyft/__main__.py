"""The command line: `python -m tinyft <command> --help`.

Commands:
  demo    the main job: for now the engine training a small network; later pretrain -> fine-tune -> forgetting
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

    demo = commands.add_parser("demo", help="train a small network with the engine and print what it learned",
                               description="Train a 2-16-16-2 MLP on two moons with tinyft's autograd engine "
                                           "and plain SGD; print the loss as it falls and the final accuracy.")
    demo.add_argument("--steps", type=int, default=500, help="SGD steps (default: %(default)s)")
    demo.add_argument("--lr", type=float, default=0.5, help="learning rate (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    demo.set_defaults(run=run_demo)
    return parser


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
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
