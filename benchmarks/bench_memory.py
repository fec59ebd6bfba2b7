"""Peak resident memory of a training loop, with the graph freed by backward() or kept (retain_graph=True).

Map of this script:
  loop_peak(retain, steps, config)   in a fresh process: build the GPT and AdamW, run `steps` steps written as
                                     users write them (`logits, loss = model(x, y)`, so the previous step's loss
                                     is alive during the next forward), print the peak resident set (ru_maxrss)
  main()                             both variants side by side, alternating, --rounds times
Why: backward() frees each node's saved arrays and inputs as it goes (tinyft/autograd.py, as PyTorch does);
with retain_graph=True it keeps them, which is what every backward did before, so the difference is what
freeing buys. Usage:
  python benchmarks/bench_memory.py [--steps 4] [--rounds 2] [--batch-size 16]
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

WORKER = """
import resource, sys
sys.path.insert(0, {root!r})
import numpy as np
import tinyft
from tinyft.nn import GPT, GPTConfig
from tinyft.optim import AdamW
tinyft.manual_seed(0)
model = GPT(GPTConfig(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128))
opt = AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
rng = np.random.default_rng(0)
x, y = rng.integers(0, 256, ({batch}, 128)), rng.integers(0, 256, ({batch}, 128))
for step in range({steps}):
    logits, loss = model(x, y)  # the previous loss (and its graph) is alive until this line returns
    opt.zero_grad()
    loss.backward(retain_graph={retain})
    opt.step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux -> MiB
"""


def loop_peak(retain, steps, batch_size):
    code = WORKER.format(root=ROOT, batch=batch_size, steps=steps, retain=retain)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="training steps per process")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per variant, alternating")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args(argv)
    peaks = {"backward() frees the graph": [], "backward(retain_graph=True)": []}
    for _ in range(args.rounds):
        peaks["backward() frees the graph"].append(loop_peak(False, args.steps, args.batch_size))
        peaks["backward(retain_graph=True)"].append(loop_peak(True, args.steps, args.batch_size))
    print(f"GPT(vocab 256, block 128, 4 layers, 4 heads, n_embd 128), batch {args.batch_size}, {args.steps} steps "
          f"of `logits, loss = model(x, y)`; peak resident memory of the whole process, {args.rounds} fresh processes each")
    for name, values in peaks.items():
        print(f"  {name:<30} {min(values):6.0f} MiB (max over rounds {max(values):.0f})")
    if args.json:
        print(json.dumps(peaks))


if __name__ == "__main__":
    main()
