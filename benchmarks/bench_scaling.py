"""Training step as the GPT grows: tinyft numba vs nanoGPT in PyTorch eager vs this machine's BLAS limit, and memory.

Map of this script:
  SIZES            xs (~0.2M parameters), ref (bench_step's reference step), the course's base and large
                   (tinyft.pretrain.COURSE_PRESETS), xl (~10M); vocab 256, every step 2048 tokens
  step_products()  every matrix product of one training step: forward, dx and dW of each Linear (the tied
                   lm_head too), attention's q k^T and p v and their four backward products, as full (T, T)
  measure_rates()  np.matmul float32 GFLOP/s on each product's shapes and layouts (BLAS's default threads, the
                   best of >= --blas-repeats calls and >= 50 ms), one pass before each round, the best pass kept
  blas_limit()     the step's time if every product ran at its measured speed
  main()           per size: bench_step.run_rounds() (alternating fresh worker processes, --config SIZE), the
                   median tokens/s of each, their ratio, peak memory, and each one's share of the BLAS limit
"tinyft % of limit" = BLAS-limit step time / tinyft's step time: what share of tinyft's step the products would
take at BLAS speed; the rest is time outside products plus products running slower than np.matmul. Usage:
  python benchmarks/bench_scaling.py [--sizes xs,ref,base,large,xl] [--steps 5] [--rounds 3] [--nanogpt DIR]
                                     [--gelu exact|tanh] [--no-torch] [--blas-repeats 5] [--products] [--json]
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_step  # noqa: E402  (the worker processes, their rounds and the machine line)
from tinyft.pretrain import COURSE_PRESETS  # noqa: E402

VOCAB_SIZE = 256
SIZE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "batch_size")


def course_size(preset):
    """A course model's shape (and its pretraining batch) from tinyft.pretrain.COURSE_PRESETS."""
    return {k: COURSE_PRESETS[preset][k] for k in SIZE_FIELDS}


SIZES = {  # every one 2048 tokens a step (batch_size x block_size)
    "xs": dict(n_layer=4, n_head=4, n_embd=64, block_size=128, batch_size=16),
    "ref": dict({k: bench_step.CONFIG[k] for k in SIZE_FIELDS if k != "batch_size"}, batch_size=16),
    "base": course_size("base"),
    "large": course_size("large"),
    "xl": dict(n_layer=8, n_head=8, n_embd=320, block_size=256, batch_size=8),
}


# --- the products of a step and their speed on this machine's BLAS ------------------------------------------


def step_products(size, vocab_size=VOCAB_SIZE):
    """Every matrix product of one forward + backward, as dicts: name, count (how many per step), batch (how
    many independent products in one np.matmul), m, k, n ((m, k) @ (k, n)), and whether A or B is a transposed
    view (the layout the step hands to BLAS). flops() counts 2 m k n per product."""
    L, H, C, T, B = (size[k] for k in SIZE_FIELDS)
    N, hd, V = B * T, C // H, vocab_size
    products = []

    def linear(name, n_in, n_out, count):  # weight (n_out, n_in) as torch.nn.Linear; x (N, n_in), g (N, n_out)
        products.extend([
            dict(name=f"{name} y = x W^T", count=count, batch=1, m=N, k=n_in, n=n_out, trans_a=False, trans_b=True),
            dict(name=f"{name} dx = g W", count=count, batch=1, m=N, k=n_out, n=n_in, trans_a=False, trans_b=False),
            dict(name=f"{name} dW = g^T x", count=count, batch=1, m=n_out, k=N, n=n_in, trans_a=True, trans_b=False),
        ])

    linear("attn.c_attn", C, 3 * C, L)
    linear("attn.c_proj", C, C, L)
    linear("mlp.c_fc", C, 4 * C, L)
    linear("mlp.c_proj", 4 * C, C, L)
    linear("lm_head (tied wte)", C, V, 1)
    BH = B * H  # attention: one (T, hd) problem per batch row and head, the whole (T, T) (no causal skipping)
    products.extend([
        dict(name="attention s = q k^T", count=L, batch=BH, m=T, k=hd, n=T, trans_a=False, trans_b=True),
        dict(name="attention y = p v", count=L, batch=BH, m=T, k=T, n=hd, trans_a=False, trans_b=False),
        dict(name="attention dp = dy v^T", count=L, batch=BH, m=T, k=hd, n=T, trans_a=False, trans_b=True),
        dict(name="attention dv = p^T dy", count=L, batch=BH, m=T, k=T, n=hd, trans_a=True, trans_b=False),
        dict(name="attention dq = ds k", count=L, batch=BH, m=T, k=T, n=hd, trans_a=False, trans_b=False),
        dict(name="attention dk = ds^T q", count=L, batch=BH, m=T, k=T, n=hd, trans_a=True, trans_b=False),
    ])
    return products


def flops(product):
    """Floating-point operations of all `count` calls of one product: 2 m k n each (a multiply and an add)."""
    p = product
    return 2 * p["count"] * p["batch"] * p["m"] * p["k"] * p["n"]


def operands(product, rng):
    """float32 A (batch, m, k) and B (batch, k, n), transposed views where the step has them (2-D when batch 1)."""
    p = product
    lead = (p["batch"],) if p["batch"] > 1 else ()

    def array(rows, cols, transposed):
        if transposed:  # stored (cols, rows), handed over as its transpose
            return np.swapaxes(rng.standard_normal((*lead, cols, rows), dtype=np.float32), -1, -2)
        return rng.standard_normal((*lead, rows, cols), dtype=np.float32)

    return array(p["m"], p["k"], p["trans_a"]), array(p["k"], p["n"], p["trans_b"])


def best_time(fn, repeats, min_seconds=0.05, max_calls=200):
    """The fastest of at least `repeats` calls (after one untimed call), going on while less than min_seconds
    have passed (up to max_calls): a short product gets many tries at a moment no neighbour holds a core."""
    fn()
    best, calls, start = float("inf"), 0, time.perf_counter()
    while calls < repeats or (time.perf_counter() - start < min_seconds and calls < max_calls):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        calls += 1
    return best


def measure_rates(size, repeats=5, rates=None, vocab_size=VOCAB_SIZE):
    """One pass over the step's distinct product shapes: np.matmul's GFLOP/s on each (best_time), kept in `rates`
    {(batch, m, k, n, trans_a, trans_b): GFLOP/s} where faster than an earlier pass (a pass that a neighbour
    slowed down does not count: on this shared machine whole seconds of 100x slower calls were seen)."""
    rates = {} if rates is None else rates
    rng, seen = np.random.default_rng(0), set()
    for p in step_products(size, vocab_size):
        key = tuple(p[k] for k in ("batch", "m", "k", "n", "trans_a", "trans_b"))
        if key in seen:
            continue
        seen.add(key)
        a, b = operands(p, rng)
        out = np.empty((*a.shape[:-1], b.shape[-1]), dtype=np.float32)  # (batch, m, n)
        best = best_time(lambda: np.matmul(a, b, out=out), repeats)
        rates[key] = max(rates.get(key, 0.0), flops(dict(p, count=1)) / best / 1e9)
    return rates


def blas_limit(size, rates, vocab_size=VOCAB_SIZE):
    """The step as if every product ran at its measured rate: each product with its GFLOP/s and seconds, the
    total flops and seconds, and the rates' overall, lowest and highest GFLOP/s."""
    rows = []
    for p in step_products(size, vocab_size):
        rate = rates[tuple(p[k] for k in ("batch", "m", "k", "n", "trans_a", "trans_b"))]
        rows.append(dict(p, gflop=flops(p) / 1e9, gflops=rate, seconds=flops(p) / 1e9 / rate))
    total_flops = sum(flops(p) for p in rows)
    seconds = sum(r["seconds"] for r in rows)
    return {"products": rows, "flops": total_flops, "seconds": seconds, "gflops": total_flops / seconds / 1e9,
            "gflops_min": min(r["gflops"] for r in rows), "gflops_max": max(r["gflops"] for r in rows)}


# --- main -----------------------------------------------------------------------------------------------------


def parse_sizes(parser, text):
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SIZES]
    if not names or unknown:
        parser.error(f"--sizes: unknown size {unknown[0] if unknown else text!r}; valid: {', '.join(SIZES)} "
                     "(comma-separated)")
    return list(dict.fromkeys(names))  # in the given order, each once


def measure_size(name, args, names):
    size = dict(SIZES[name], vocab_size=VOCAB_SIZE)
    tokens = size["batch_size"] * size["block_size"]
    bench_step.prime_numba_cache(size, args.gelu)
    rates, results = {}, {contender: [] for contender in names}
    for _ in range(args.rounds):  # a BLAS pass before each round: the products' best over passes spread in time
        measure_rates(size, args.blas_repeats, rates)
        for contender, rounds in bench_step.run_rounds(names, size, args.steps, 1, args.gelu, args.nanogpt).items():
            results[contender] += rounds
    limit = blas_limit(size, rates)
    steps = bench_step.summarize(results, tokens)
    row = {"size": size, "tokens": tokens, "params": steps["tinyft numba"]["params"], "steps": steps, "blas": limit,
           "blas_limit_tokens_per_s": tokens / limit["seconds"]}
    for contender, key in (("tinyft numba", "tinyft"), ("torch eager", "torch")):
        if contender in steps:  # the products at BLAS speed as a share of the contender's median step
            row[f"{key}_share_of_limit"] = limit["seconds"] / (steps[contender]["median_ms"] / 1e3)
    if "torch eager" in steps:
        row["ratio"] = bench_step.ratio_summary(steps)
        if steps["torch eager"]["params"] != row["params"]:
            print(f"warning: {name}: tinyft has {row['params']:,} parameters, torch {steps['torch eager']['params']:,}")
    return row


def print_products(rows):
    """--products: each product's shape (A^T / B^T: that operand is a transposed view) and its BLAS speed."""
    for name, r in rows.items():
        print(f"\n{name + ': product':<36}{'count':>6}{'batch x (m, k) @ (k, n)':>32}{'view':>6}{'GFLOP':>8}"
              f"{'GFLOP/s':>9}{'ms at that speed':>17}")
        for p in r["blas"]["products"]:
            shape = f"{p['batch']} x ({p['m']}, {p['k']}) @ ({p['k']}, {p['n']})"
            view = "A^T" if p["trans_a"] else "B^T" if p["trans_b"] else ""
            print(f"{'  ' + p['name']:<36}{p['count']:>6}{shape:>32}{view:>6}{p['gflop']:>8.3f}{p['gflops']:>9.0f}"
                  f"{p['seconds'] * 1e3:>17.2f}")


def print_tables(rows, has_torch):
    na = "n/a"
    print(f"\n{'size':<6}{'params':>8}{'tinyft tok/s':>13}{'torch tok/s':>12}{'tinyft/torch':>13}{'worst-best':>13}"
          f"{'BLAS GFLOP/s':>13}{'min-max':>11}{'BLAS-limit tok/s':>17}{'tinyft % limit':>15}{'torch % limit':>14}")
    for name, r in rows.items():
        s, b = r["steps"], r["blas"]
        torch_tok = f"{s['torch eager']['tokens_per_s']:.0f}" if has_torch else na
        ratio = f"{r['ratio']['ratio']:.2f}x" if has_torch else na
        spread = (f"{r['ratio']['worst_round_ratio']:.2f}-{r['ratio']['best_round_ratio']:.2f}" if has_torch else na)
        torch_share = f"{100 * r['torch_share_of_limit']:.0f}%" if has_torch else na
        print(f"{name:<6}{r['params'] / 1e6:>7.2f}M{s['tinyft numba']['tokens_per_s']:>13.0f}{torch_tok:>12}"
              f"{ratio:>13}{spread:>13}{b['gflops']:>13.0f}{b['gflops_min']:>5.0f}-{b['gflops_max']:<5.0f}"
              f"{r['blas_limit_tokens_per_s']:>17.0f}{100 * r['tinyft_share_of_limit']:>14.0f}%{torch_share:>14}")

    print(f"\n{'where tinyft numba step goes':<30}{'step ms':>9}{'products at BLAS speed ms':>27}{'rest ms':>9}"
          "   (rest: time outside products + products slower than np.matmul)")
    for name, r in rows.items():
        step_ms, blas_ms = r["steps"]["tinyft numba"]["median_ms"], r["blas"]["seconds"] * 1e3
        print(f"{name:<30}{step_ms:>9.1f}{blas_ms:>18.1f} ({100 * blas_ms / step_ms:>3.0f}%){step_ms - blas_ms:>12.1f}")

    f = bench_step.fmt_mib
    print(f"\n{'memory, MiB':<12}{'tinyft peak':>12}{'step peak - before':>20}{'torch peak':>12}{'step peak - before':>20}"
          "   (medians over rounds: VmHWM; minus VmRSS before the first step)")
    for name, r in rows.items():
        ours, theirs = r["steps"]["tinyft numba"], r["steps"].get("torch eager", {})
        print(f"{name:<12}{f(ours['peak_mib']):>12}{f(ours['step_increase_mib']):>20}"
              f"{f(theirs.get('peak_mib')):>12}{f(theirs.get('step_increase_mib')):>20}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bench_step.add_common_arguments(parser, rounds=3)
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, from {', '.join(SIZES)} (default all)")
    parser.add_argument("--blas-repeats", type=int, default=5,
                        help="at least this many timed np.matmul calls per product shape, the best counts")
    parser.add_argument("--products", action="store_true", help="also print every product's shape and GFLOP/s")
    args = parser.parse_args(argv)
    bench_step.check_common_arguments(parser, args)
    if args.blas_repeats < 1:
        parser.error(f"--blas-repeats must be at least 1, got {args.blas_repeats}")
    sizes = parse_sizes(parser, args.sizes)

    info, has_torch = bench_step.machine_and_torch(args.no_torch)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    names = ["tinyft numba"] + (["torch eager"] if has_torch else [])
    print(f"vocab {VOCAB_SIZE}, float32, gelu {args.gelu}; per size {args.rounds} alternating rounds x {args.steps} "
          f"steps (after {bench_step.WARMUP_STEPS} warm-up), a fresh process per contender and round; AdamW with "
          "nanoGPT's groups (decay 0.1 on 2-D parameters)")
    rows = {}
    for name in sizes:
        t0 = time.perf_counter()
        rows[name] = measure_size(name, args, names)
        models = "; ".join(f"{c}: {s['model']}" for c, s in rows[name]["steps"].items())
        print(f"{name}: {SIZES[name]}, {rows[name]['params']:,} parameters ({models}); "
              f"{time.perf_counter() - t0:.0f} s")
    if args.products:
        print_products(rows)
    print_tables(rows, has_torch)
    print(f"BLAS: np.matmul float32 on each product's shapes and layouts, the best of >= {args.blas_repeats} calls and "
          f">= 50 ms, best of {args.rounds} passes (one per round); attention as full (T, T) products (a kernel "
          "skipping the masked half does fewer flops)")
    if args.json:
        print(json.dumps({"machine": info, "gelu": args.gelu, "rounds": args.rounds, "steps_per_round": args.steps,
                          "vocab_size": VOCAB_SIZE, "sizes": rows}))


if __name__ == "__main__":
    main()
