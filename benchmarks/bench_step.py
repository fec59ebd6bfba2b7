"""Training-step throughput: tinyft with the NumPy twins vs the Numba kernels vs PyTorch eager, same run.

Map of this script:
  machine()         CPU model, core count, Numba threads and threading layer, BLAS library and threads
  time_steps()      forward + backward + AdamW on GPT(vocab 256, block 128, n_layer 4, n_head 4, n_embd 128)
  kernel_table()    each kernel at the step's shapes: Numba time, NumPy-twin time, speed-up
  torch_*()         the same GPT written with torch.nn (only if torch imports), and SDPA fwd+bwd
  startup()         import-to-end-of-first-step, warm Numba cache and cold (an empty NUMBA_CACHE_DIR)
  profile_step()    --profile: where a numba step's time goes, each Function's forward and backward timed
Contenders run in interleaved rounds (numpy, numba, torch, numpy, ...) so a noisy neighbour hurts all of
them alike, each round of each contender in a fresh process of its own (as a user runs one library at a
time: PyTorch's OpenMP threads and Numba's workers never share the process); --same-process times them
all in this one. Step times are reported as median and best. Usage:
  python benchmarks/bench_step.py [--steps 10] [--rounds 3] [--batch-size 16] [--no-torch] [--json]
  python benchmarks/bench_step.py --profile [--steps 20]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tinyft  # noqa: E402
from tinyft import kernels  # noqa: E402
from tinyft.kernels import adamw, attention, cross_entropy, embedding, gelu, layernorm  # noqa: E402

CONFIG = dict(vocab_size=256, block_size=128, n_layer=4, n_head=4, n_embd=128)


# --- the machine ------------------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info():
    try:
        import threadpoolctl
        for lib in threadpoolctl.threadpool_info():
            if lib.get("user_api") == "blas":
                return f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture')})", lib.get("num_threads")
    except ImportError:
        pass
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{cfg.get('name')} {cfg.get('version')}", "unknown (install threadpoolctl to see)"
    except Exception:  # noqa: BLE001 - numpy < 1.26 has no mode="dicts"
        return "unknown", "unknown"


def machine():
    import numba
    x = np.ones((4, 4), np.float32)
    layernorm.layernorm_forward_numba(x, x[0], x[0], np.float32(1e-5))  # start Numba's thread pool
    blas, blas_threads = blas_info()
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "numba": numba.__version__, "numpy": np.__version__,
            "numba_threads": numba.get_num_threads(), "numba_threading_layer": numba.threading_layer(),
            "blas": blas, "blas_threads": blas_threads, "python": platform.python_version()}


# --- tinyft step --------------------------------------------------------------------------------------


def make_batch(batch_size, seed=0):
    rng = np.random.default_rng(seed)
    T, V = CONFIG["block_size"], CONFIG["vocab_size"]
    return rng.integers(0, V, (batch_size, T)), rng.integers(0, V, (batch_size, T))


def tinyft_stepper(batch_size):
    from tinyft.nn import GPT, GPTConfig
    from tinyft.optim import AdamW
    tinyft.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG))
    opt = AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    idx, targets = make_batch(batch_size)

    def step():
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.data)

    return step


def torch_stepper(batch_size):
    import torch
    import torch.nn as tnn
    import torch.nn.functional as TF
    C, H, L, V, T = CONFIG["n_embd"], CONFIG["n_head"], CONFIG["n_layer"], CONFIG["vocab_size"], CONFIG["block_size"]

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = tnn.LayerNorm(C), tnn.LayerNorm(C)
            self.c_attn, self.c_proj = tnn.Linear(C, 3 * C), tnn.Linear(C, C)
            self.c_fc, self.mlp_proj = tnn.Linear(C, 4 * C), tnn.Linear(4 * C, C)

        def forward(self, x):
            B, T_, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T_, H, C // H).transpose(1, 2) for t in (q, k, v))
            y = TF.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T_, C)
            x = x + self.c_proj(y)
            return x + self.mlp_proj(TF.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = tnn.Embedding(V, C), tnn.Embedding(T, C)
            self.h = tnn.ModuleList(Block() for _ in range(L))
            self.ln_f = tnn.LayerNorm(C)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            logits = self.ln_f(x) @ self.wte.weight.T  # lm_head tied to wte, as in nanoGPT
            return TF.cross_entropy(logits.view(-1, V), targets.view(-1))

    torch.manual_seed(0)
    model = GPT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    idx, targets = (torch.from_numpy(a) for a in make_batch(batch_size))

    def step():
        loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def time_steps_in_processes(names, steps, rounds, batch_size):
    """Each round of each contender in a fresh `python bench_step.py --worker NAME`; {name: [seconds, ...]}."""
    times = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name, "--steps", str(steps),
                                   "--batch-size", str(batch_size)], capture_output=True, text=True, check=True)
            times[name] += json.loads(done.stdout.strip().splitlines()[-1])
    return times


def time_steps(contenders, steps, rounds, batch_size):
    """contenders: {name: (make_step, backend or None)}. Returns {name: [seconds per step, ...]}."""
    steppers = {}
    for name, (make, backend) in contenders.items():
        with kernels.use(backend or kernels.current()):
            steppers[name] = make(batch_size)
            for _ in range(2):  # warm-up: compile, allocate, fill caches
                steppers[name]()
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (_, backend) in contenders.items():
            with kernels.use(backend or kernels.current()):
                for _ in range(steps):
                    t0 = time.perf_counter()
                    steppers[name]()
                    times[name].append(time.perf_counter() - t0)
    return times


CONTENDERS = {"tinyft numpy": (tinyft_stepper, "numpy"), "tinyft numba": (tinyft_stepper, "numba"),
              "torch eager": (torch_stepper, None)}


# --- kernels at the step's shapes ---------------------------------------------------------------------


def best_and_median(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), statistics.median(ts)


def kernel_cases(batch_size):
    rng = np.random.default_rng(0)
    f32 = np.float32
    B, T, C, V, H = batch_size, CONFIG["block_size"], CONFIG["n_embd"], CONFIG["vocab_size"], CONFIG["n_head"]
    N = B * T
    x, g = rng.standard_normal((N, C)).astype(f32), rng.standard_normal((N, C)).astype(f32)
    w, b = rng.standard_normal(C).astype(f32), rng.standard_normal(C).astype(f32)
    eps = f32(1e-5)
    _, mean, rstd = layernorm.layernorm_forward_reference(x, w, b, eps)
    h = rng.standard_normal(N * 4 * C).astype(f32)
    logits, targets = rng.standard_normal((N, V)).astype(f32), rng.integers(0, V, N)
    _, lse = cross_entropy.cross_entropy_forward_reference(logits, targets, -1)
    g_rows = np.full(N, 1.0 / N, f32)
    q, k, v, dout = (rng.standard_normal((B, H, T, C // H)).astype(f32) for _ in range(4))
    ids = rng.integers(0, V, N)
    n_params = 12 * CONFIG["n_layer"] * C * C + (V + T) * C  # about the GPT's parameter count
    p, pg, m, vv = (rng.standard_normal(n_params).astype(f32) for _ in range(4))
    vv = np.abs(vv)
    save = attention.SAVE_PROBS

    def attn(fw, bw, save_probs):
        def run():
            out, l_, probs = fw(q, k, v, True, save_probs)
            bw(dout, q, k, v, out, l_, probs, True)
        return run

    A = attention
    return {  # name: (numba callable, numpy-twin callable)
        "layernorm fwd (2048x128)": (lambda: layernorm.layernorm_forward_numba(x, w, b, eps),
                                     lambda: layernorm.layernorm_forward_reference(x, w, b, eps)),
        "layernorm bwd": (lambda: layernorm.layernorm_backward_numba(g, x, w, mean, rstd),
                          lambda: layernorm.layernorm_backward_reference(g, x, w, mean, rstd)),
        "gelu fwd (2048x512)": (lambda: gelu.gelu_forward_numba(h), lambda: gelu.gelu_forward_reference(h)),
        "gelu bwd": (lambda: gelu.gelu_backward_numba(h, h), lambda: gelu.gelu_backward_reference(h, h)),
        "cross-entropy fwd (2048x256)": (lambda: cross_entropy.cross_entropy_forward_numba(logits, targets, -1),
                                         lambda: cross_entropy.cross_entropy_forward_reference(logits, targets, -1)),
        "cross-entropy bwd": (lambda: cross_entropy.cross_entropy_backward_numba(g_rows, logits, targets, -1, lse),
                              lambda: cross_entropy.cross_entropy_backward_reference(g_rows, logits, targets, -1, lse)),
        f"attention fwd+bwd (16,4,128,32) save_probs={save}": (
            attn(A.attention_forward_numba, A.attention_backward_numba, save),
            attn(A.attention_forward_reference, A.attention_backward_reference, True)),
        f"attention fwd+bwd save_probs={not save}": (
            attn(A.attention_forward_numba, A.attention_backward_numba, not save),
            attn(A.attention_forward_reference, A.attention_backward_reference, True)),
        "embedding bwd (2048 ids, 256x128)": (lambda: embedding.embedding_backward_numba(ids, g, V),
                                              lambda: embedding.embedding_backward_reference(ids, g, V)),
        f"adamw update ({n_params} params)": (
            lambda: adamw.adam_update_numba(p, pg, m, vv, 3e-4, 0.9, 0.95, 1e-8, 0.1, 5, True),
            lambda: adamw.adam_update_reference(p, pg, m, vv, 3e-4, 0.9, 0.95, 1e-8, 0.1, 5, True)),
    }, (q, k, v, dout)


def kernel_table(batch_size, repeats):
    cases, attn_inputs = kernel_cases(batch_size)
    rows = []
    for name, (fast, twin) in cases.items():
        nb, nb_med = best_and_median(fast, repeats)
        tw, tw_med = best_and_median(twin, repeats)
        rows.append({"kernel": name, "numba_ms": nb * 1e3, "numba_median_ms": nb_med * 1e3, "numpy_ms": tw * 1e3,
                     "numpy_median_ms": tw_med * 1e3, "speedup": tw / nb, "speedup_median": tw_med / nb_med})
    return rows, attn_inputs


def torch_sdpa_ms(q, k, v, dout, repeats):
    import torch
    import torch.nn.functional as TF
    tq, tk, tv = (torch.from_numpy(a.copy()).requires_grad_() for a in (q, k, v))
    tg = torch.from_numpy(dout)

    def run():
        out = TF.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
        out.backward(tg)

    best, med = best_and_median(run, repeats)
    return best * 1e3, med * 1e3


# --- start-up time --------------------------------------------------------------------------------------

STARTUP_SCRIPT = """
import time; t0 = time.perf_counter()
import sys; sys.path.insert(0, {root!r})
import numpy as np
import tinyft
from tinyft.nn import GPT, GPTConfig
from tinyft.optim import AdamW
model = GPT(GPTConfig(**{config!r}))
opt = AdamW(model.parameters(), lr=3e-4)
rng = np.random.default_rng(0)
idx, targets = rng.integers(0, 256, ({batch}, 128)), rng.integers(0, 256, ({batch}, 128))
_, loss = model(idx, targets); opt.zero_grad(); loss.backward(); opt.step()
print(time.perf_counter() - t0)
"""


def startup(batch_size):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    code = STARTUP_SCRIPT.format(root=root, config=CONFIG, batch=batch_size)

    def run(env):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "TINYFT_KERNELS": "numba", **env}, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return float(done.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as empty:
        cold = run({"NUMBA_CACHE_DIR": empty})
        warm = min(run({"NUMBA_CACHE_DIR": empty}) for _ in range(2))
    warm_default = run({})  # the cache beside the source files, as a user gets it
    return {"cold_s": cold, "warm_s": warm, "warm_default_cache_s": warm_default}


# --- where the time goes -------------------------------------------------------------------------------


def profile_step(steps, batch_size):
    """Time every Function's forward and backward (and the three phases) inside numba training steps."""
    import collections
    from tinyft.autograd import Function
    totals = collections.defaultdict(float)

    def timed(fn, label):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - t0
        return staticmethod(run)

    classes, todo = set(), [Function]
    while todo:  # every Function subclass, however deep
        for sub in todo.pop().__subclasses__():
            classes.add(sub)
            todo.append(sub)
    for cls in classes:
        for phase in ("forward", "backward"):
            if isinstance(cls.__dict__.get(phase), staticmethod):
                setattr(cls, phase, timed(cls.__dict__[phase].__func__, f"{cls.__name__}.{phase}"))
    from tinyft.nn import GPT, GPTConfig
    from tinyft.optim import AdamW
    with kernels.use("numba"):
        tinyft.manual_seed(0)
        model = GPT(GPTConfig(**CONFIG))
        opt = AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
        idx, targets = make_batch(batch_size)
        phases = collections.defaultdict(float)
        for i in range(steps + 2):
            if i == 2:  # two warm-up steps, then count
                totals.clear()
                phases.clear()
            t0 = time.perf_counter()
            _, loss = model(idx, targets)
            t1 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            phases["forward"] += t1 - t0
            phases["backward"] += t2 - t1
            phases["optimizer step"] += t3 - t2
    print(f"numba step, mean over {steps} steps: " + ", ".join(f"{k} {v / steps * 1e3:.1f} ms" for k, v in phases.items()))
    print(f"{'Function.phase':<34}{'ms per step':>12}")
    for label, total in sorted(totals.items(), key=lambda kv: -kv[1]):
        if total / steps >= 5e-5:
            print(f"{label:<34}{total / steps * 1e3:>12.2f}")


# --- main -----------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per contender per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20, help="repeats per kernel timing")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if it imports")
    parser.add_argument("--no-startup", action="store_true", help="skip the import-to-first-step subprocesses")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--same-process", action="store_true",
                        help="time every contender in this process (default: a fresh process per round)")
    parser.add_argument("--profile", action="store_true", help="only show where a numba step's time goes")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: time one contender, print JSON
    args = parser.parse_args(argv)
    if args.profile:
        profile_step(args.steps, args.batch_size)
        return
    if args.worker:
        make, backend = CONTENDERS[args.worker]
        print(json.dumps(time_steps({args.worker: (make, backend)}, args.steps, 1, args.batch_size)[args.worker]))
        return

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            pass
    info = machine()
    if torch is not None:
        info["torch"], info["torch_threads"] = torch.__version__, torch.get_num_threads()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    print(f"config: {CONFIG}, batch {args.batch_size}, float32; {args.rounds} rounds x {args.steps} steps")

    contenders = {name: CONTENDERS[name] for name in CONTENDERS if torch is not None or name != "torch eager"}
    if args.same_process:
        times = time_steps(contenders, args.steps, args.rounds, args.batch_size)
    else:
        times = time_steps_in_processes(list(contenders), args.steps, args.rounds, args.batch_size)
    print(f"step times: {'one process' if args.same_process else 'a fresh process per contender and round'}")
    tokens = args.batch_size * CONFIG["block_size"]
    summary = {"machine": info, "batch_size": args.batch_size, "steps": {}}
    print(f"\n{'training step':<16}{'median ms':>11}{'best ms':>10}{'tokens/s (median)':>19}{'tokens/s (best)':>17}")
    for name, ts in times.items():
        med, best = statistics.median(ts), min(ts)
        summary["steps"][name] = {"median_ms": med * 1e3, "best_ms": best * 1e3,
                                  "tokens_per_s": tokens / med, "tokens_per_s_best": tokens / best}
        print(f"{name:<16}{med * 1e3:>11.1f}{best * 1e3:>10.1f}{tokens / med:>19.0f}{tokens / best:>17.0f}")
    steps = summary["steps"]
    if "torch eager" in steps:
        ratio = steps["tinyft numba"]["tokens_per_s"] / steps["torch eager"]["tokens_per_s"]
        summary["numba_over_torch"] = ratio
        print(f"tinyft numba / torch eager (median tokens/s): {ratio:.2f}x")
    summary["numba_over_numpy"] = steps["tinyft numba"]["tokens_per_s"] / steps["tinyft numpy"]["tokens_per_s"]
    print(f"tinyft numba / tinyft numpy: {summary['numba_over_numpy']:.2f}x")

    rows, (q, k, v, dout) = kernel_table(args.batch_size, args.repeats)
    summary["kernels"] = rows
    print(f"\n{'kernel (float32)':<48}{'numba ms':>9}{'numpy ms':>9}{'speed-up':>9}{'(median)':>9}")
    for r in rows:
        print(f"{r['kernel']:<48}{r['numba_ms']:>9.3f}{r['numpy_ms']:>9.3f}{r['speedup']:>8.1f}x"
              f"{r['speedup_median']:>8.1f}x")
    if torch is not None:
        best, med = torch_sdpa_ms(q, k, v, dout, args.repeats)
        ours = rows[6]
        summary["sdpa"] = {"torch_ms": best, "torch_median_ms": med, "ours_ms": ours["numba_ms"],
                           "ours_median_ms": ours["numba_median_ms"]}
        print(f"torch SDPA fwd+bwd (is_causal) {best:.3f} ms (median {med:.3f}); ours {ours['numba_ms']:.3f} ms "
              f"(median {ours['numba_median_ms']:.3f}): {best / ours['numba_ms']:.2f}x")

    if not args.no_startup:
        s = startup(args.batch_size)
        summary["startup"] = s
        print(f"\nimport to end of first step: warm cache {s['warm_s']:.2f} s (default cache folder "
              f"{s['warm_default_cache_s']:.2f} s), cold cache {s['cold_s']:.2f} s")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
