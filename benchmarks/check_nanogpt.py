"""tinyft <-> nanoGPT, checked against nanoGPT's own unmodified model.py, train.py and sample.py.

Map of this script:
  pretrain_pair()     two tinyft GPTs pretrained for --steps on the default corpus, gelu "exact" and "tanh"
  load_like_sample()  ckpt.pt -> nanoGPT's GPT exactly as its sample.py loads it
  compare_logits()    tinyft's logits vs nanoGPT's on the same validation windows (max abs difference)
  greedy_ids()        nanoGPT's generate with top_k=1 (greedy) vs tinyft's generate(temperature=0)
  optimizer_check()   configure_optimizers() + load_state_dict(ckpt["optimizer"]); then one AdamW step in each
  round_trip()        import_checkpoint(ckpt.pt) -> every array equal to the tinyft checkpoint's, bit for bit
  native_check()      a GPT built and trained by nanoGPT's code (its vocabulary has no <unk>), saved in bfloat16
                      too, imported into tinyft: logits compared
  run_scripts()       nanoGPT's train.py --init_from=resume and sample.py run on the export (subprocesses);
                      the checkpoint train.py then saves is imported back and compared
Needs PyTorch and a nanoGPT checkout (sample.py also imports tiktoken). Figures depend on the run (seed 0).
  python benchmarks/check_nanogpt.py --nanogpt DIR [--steps 200] [--no-scripts] [--json]
"""

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tinyft  # noqa: E402
from tinyft import checkpoint, export  # noqa: E402
from tinyft.pretrain import PretrainConfig, fixed_batches, prepare_data, pretrain  # noqa: E402
from tinyft.nn import GPT, GPTConfig  # noqa: E402


def pretrain_pair(work, steps, seed=0):
    """{gelu: (PretrainResult, prepared data)} for the same settings and seed, exact and tanh."""
    runs = {}
    for gelu in ("exact", "tanh"):
        config = PretrainConfig(steps=steps, warmup_steps=min(100, steps // 10), eval_every=steps,
                                checkpoint_every=steps, sample_tokens=1, seed=seed, gelu=gelu,
                                out=os.path.join(work, f"tinyft_{gelu}"))
        t0 = time.perf_counter()
        result = pretrain(config, progress=False, log=lambda *a: None)
        print(f"pretrained gelu={gelu}: {steps} steps in {time.perf_counter() - t0:.0f} s, "
              f"val loss {result.final_val_loss:.3f}")
        runs[gelu] = (result, prepare_data(config, result.tokenizer))
    return runs


def load_like_sample(torch, nanogpt, path):
    """What nanoGPT's sample.py does with init_from='resume' (its lines, minus the device handling)."""
    checkpoint_ = torch.load(path, map_location="cpu")
    gptconf = nanogpt.GPTConfig(**checkpoint_["model_args"])
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count
        model = nanogpt.GPT(gptconf)
    state_dict = checkpoint_["model"]
    unwanted_prefix = "_orig_mod."
    for k, v in list(state_dict.items()):
        if k.startswith(unwanted_prefix):
            state_dict[k[len(unwanted_prefix):]] = state_dict.pop(k)
    model.load_state_dict(state_dict)
    model.eval()
    return model, checkpoint_


def compare_logits(torch, nano_model, tinyft_model, batches, id_shift=0):
    """Max |tinyft - nanoGPT| over every logit of the batches, and the largest |logit| for scale."""
    worst, largest = 0.0, 0.0
    for x, y in batches:
        with torch.no_grad():
            theirs, _ = nano_model(torch.from_numpy(x), torch.from_numpy(y))  # with targets: logits at every position
        ours = tinyft_model(x + id_shift)[0].data[..., id_shift:]  # (B, T, V)
        worst = max(worst, float(np.abs(ours - theirs.numpy()).max()))
        largest = max(largest, float(np.abs(ours).max()))
    return worst, largest


def greedy_ids(torch, nano_model, tinyft_model, prompt_ids, n):
    with torch.no_grad():
        theirs = nano_model.generate(torch.from_numpy(prompt_ids), n, temperature=1.0, top_k=1).numpy()
    ours = tinyft_model.generate(prompt_ids, n, temperature=0)
    mismatch = np.flatnonzero(theirs[0] != ours[0])
    return ours, theirs, (int(mismatch[0]) if mismatch.size else None)


def optimizer_check(torch, nanogpt_dir, ckpt_pt, tinyft_ckpt, batch, lr=1e-3):
    """nanoGPT's configure_optimizers() optimizer accepts the exported state; then one step in each framework
    from the same weights, moments and batch (weight decay off in both: nanoGPT also decays the embeddings)."""
    nano_model, saved = load_like_sample(torch, _import_nanogpt(nanogpt_dir), ckpt_pt)
    nano_model.train()
    with contextlib.redirect_stdout(io.StringIO()):
        opt = nano_model.configure_optimizers(0.1, lr, (0.9, 0.95), "cpu")
    opt.load_state_dict(saved["optimizer"])
    ours, our_opt, _ = checkpoint.load_model_and_optimizer(tinyft_ckpt)
    our_state = {name: our_opt.state[i] for i, _, _, name in our_opt._indexed()}
    names = {id(p): n for n, p in nano_model.named_parameters()}
    moments_equal = all(np.array_equal(opt.state[p]["exp_avg"].numpy(), our_state[names[id(p)]]["m"])
                        and np.array_equal(opt.state[p]["exp_avg_sq"].numpy(), our_state[names[id(p)]]["v"])
                        and int(opt.state[p]["step"]) == our_state[names[id(p)]]["step"]
                        for g in opt.param_groups for p in g["params"])
    for group in opt.param_groups + our_opt.param_groups:
        group["lr"], group["weight_decay"] = lr, 0.0
    before = {n: p.detach().numpy().copy() for n, p in nano_model.named_parameters()}
    x, y = batch
    _, loss = nano_model(torch.from_numpy(x), torch.from_numpy(y))
    loss.backward()
    opt.step()
    _, our_loss = ours(x, y)
    our_opt.zero_grad()
    our_loss.backward()
    our_opt.step()
    ours_after = dict(ours.named_parameters())
    update = max(float(np.abs(p.detach().numpy() - before[n]).max()) for n, p in nano_model.named_parameters())
    disagree = max(float(np.abs(p.detach().numpy() - ours_after[n].data).max())
                   for n, p in nano_model.named_parameters())
    return {"moments_equal": moments_equal, "groups": [len(g["params"]) for g in opt.param_groups],
            "loss_nanogpt": loss.item(), "loss_tinyft": our_loss.item(), "max_update": update,
            "max_weight_difference_after_step": disagree}


def round_trip(path_a, path_b):
    """How many arrays two tinyft checkpoints hold, and whether every one (and config, tokenizer) is identical."""
    a, b = checkpoint.load(path_a), checkpoint.load(path_b)
    pairs = [(a.model_state[k], b.model_state.get(k)) for k in a.model_state]
    for i, entry in a.optimizer_state["state"].items():
        pairs += [(v, b.optimizer_state["state"].get(i, {}).get(k)) for k, v in entry.items()]
    same = all(y is not None and x.dtype == y.dtype and np.array_equal(x, y) for x, y in pairs)
    return {"arrays": len(pairs), "bit_identical": bool(same), "config_equal": a.config == b.config,
            "tokenizer_equal": a.meta["tokenizer"] == b.meta["tokenizer"], "step": b.meta["step"]}


def native_check(torch, nanogpt, work, text, steps=30):
    """A GPT made and trained by nanoGPT's code with nanoGPT's own character vocabulary (ids 0..V-1, no <unk>)."""
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int64)
    torch.manual_seed(1337)
    with contextlib.redirect_stdout(io.StringIO()):
        model = nanogpt.GPT(nanogpt.GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, bias=False,
                                              vocab_size=len(chars), dropout=0.0))
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    rng = np.random.default_rng(0)

    def batch():
        starts = rng.integers(0, len(data) - 65, 8)
        return (np.stack([data[s:s + 64] for s in starts]), np.stack([data[s + 1:s + 65] for s in starts]))

    for _ in range(steps):
        x, y = batch()
        _, loss = model(torch.from_numpy(x), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    folder = os.path.join(work, "native", "out")
    os.makedirs(folder)
    model_args = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, bias=False, vocab_size=len(chars), dropout=0.0)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "model_args": model_args,
                "iter_num": steps, "best_val_loss": loss.item(), "config": {"dataset": "native"}},
               os.path.join(folder, "ckpt.pt"))
    data_dir = os.path.join(work, "native", "data", "native")  # where nanoGPT keeps meta.pkl: data/<dataset>/
    os.makedirs(data_dir)
    import pickle

    with open(os.path.join(data_dir, "meta.pkl"), "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        result = export.import_checkpoint(os.path.join(folder, "ckpt.pt"), os.path.join(work, "native_tinyft"))
    ours = checkpoint.load_model(result["checkpoint"])
    model.eval()
    worst, largest = compare_logits(torch, model, ours, [batch() for _ in range(4)], id_shift=1)

    bf16 = os.path.join(work, "native_bf16")
    os.makedirs(bf16)
    torch.save({"model": {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, "model_args": model_args},
               os.path.join(bf16, "ckpt.pt"))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        bf = export.import_checkpoint(os.path.join(bf16, "ckpt.pt"), os.path.join(work, "native_bf16_tinyft"),
                                           vocab=os.path.join(data_dir, "meta.pkl"))
    bf_state = checkpoint.load(bf["checkpoint"]).model_state
    want = {k: v.to(torch.bfloat16).float().numpy() for k, v in model.state_dict().items()}
    want["transformer.wte.weight"] = np.concatenate([np.zeros((1, 64), np.float32), want["transformer.wte.weight"]])
    want["lm_head.weight"] = want["transformer.wte.weight"]
    bf_exact = all(np.array_equal(bf_state[k], want[k]) for k in want)
    return {"vocab": len(chars), "tinyft_vocab": ours.config.vocab_size, "gelu": ours.config.gelu,
            "max_abs_logit_difference": worst, "max_abs_logit": largest, "optimizer_imported": result["optimizer"],
            "bf16_equals_torch_float": bool(bf_exact), "notes": result["notes"] + bf["notes"]}


def run_scripts(nanogpt_dir, work, export_dir, tokenizer, train_ids, val_ids, block_size, iter_num):
    """nanoGPT's train.py (init_from='resume', 2 more iterations) and sample.py (greedy) on the export."""
    run_dir = os.path.join(work, "nanogpt_run")
    os.makedirs(os.path.join(run_dir, "data", "tinyft"))
    for name in ("model.py", "train.py", "sample.py", "configurator.py"):  # unmodified, as the user has them
        shutil.copy(os.path.join(nanogpt_dir, name), run_dir)
    shutil.copytree(export_dir, os.path.join(run_dir, "out"))  # train.py saves into out_dir: work on a copy
    shutil.copy(os.path.join(export_dir, "meta.pkl"), os.path.join(run_dir, "data", "tinyft", "meta.pkl"))
    train_ids.astype(np.uint16).tofile(os.path.join(run_dir, "data", "tinyft", "train.bin"))
    val_ids.astype(np.uint16).tofile(os.path.join(run_dir, "data", "tinyft", "val.bin"))
    common = ["--device=cpu", "--dtype=float32", "--compile=False", "--out_dir=out"]
    sample = subprocess.run([sys.executable, "sample.py", "--init_from=resume", "--num_samples=1",
                             "--max_new_tokens=120", "--top_k=1", "--start=The ", *common],
                            cwd=run_dir, capture_output=True, text=True, timeout=600)
    if sample.returncode:
        raise RuntimeError("sample.py failed:\n" + sample.stderr[-3000:])
    marker = "data/tinyft/meta.pkl...\n"  # sample.py prints "Loading meta from <path>...", then the text
    if marker not in sample.stdout:
        raise RuntimeError("sample.py did not load the vocabulary:\n" + sample.stdout[-2000:])
    start = sample.stdout.index(marker) + len(marker)
    text = sample.stdout[start:sample.stdout.index("\n---------------", start)]
    prompt = tokenizer.encode("The ")[None, :]
    train = subprocess.run([sys.executable, "train.py", "--init_from=resume", "--dataset=tinyft", "--batch_size=4",
                            f"--block_size={block_size}", "--gradient_accumulation_steps=1", "--eval_iters=2",
                            "--eval_interval=1", "--log_interval=1", f"--max_iters={iter_num + 2}", *common],
                           cwd=run_dir, capture_output=True, text=True, timeout=1200)
    if train.returncode:
        raise RuntimeError("train.py failed:\n" + train.stderr[-3000:])
    lines = [line for line in train.stdout.splitlines() if line.startswith(("iter", "step", "Resuming"))]
    return {"sample_text": text, "prompt": prompt, "train_log": lines, "trained_ckpt": os.path.join(run_dir, "out",
                                                                                                   "ckpt.pt")}


def _import_nanogpt(nanogpt_dir):
    sys.path.insert(0, os.path.abspath(nanogpt_dir))
    import model as nanogpt  # nanoGPT's model.py

    return nanogpt


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nanogpt", required=True, help="a nanoGPT checkout (holds model.py, train.py, sample.py)")
    parser.add_argument("--steps", type=int, default=200, help="tinyft pretraining steps per model (default 200)")
    parser.add_argument("--no-scripts", action="store_true", help="skip running train.py and sample.py")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON last")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.nanogpt, "model.py")):
        parser.error(f"--nanogpt {args.nanogpt!r}: no model.py there; pass a nanoGPT checkout")
    import torch

    nanogpt = _import_nanogpt(args.nanogpt)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, "
          f"numpy {np.__version__}, tinyft {tinyft.__version__}")
    report = {"steps": args.steps}
    work = tempfile.mkdtemp(prefix="check_nanogpt_")
    runs = pretrain_pair(work, args.steps)
    batches = None
    for gelu, (result, prepared) in runs.items():
        export_dir = os.path.join(work, f"export_{gelu}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = export.export_nanogpt(result.checkpoint, export_dir)
        print(f"\n== gelu={gelu}: exported to {export_dir} ({len(caught)} notes)")
        for note in summary["notes"]:
            print("  note:", note[:160])
        nano_model, _ = load_like_sample(torch, nanogpt, os.path.join(export_dir, "ckpt.pt"))
        batches = batches or fixed_batches(prepared["val"], 4, 8, result.model.config.block_size, seed=99)
        worst, largest = compare_logits(torch, nano_model, result.model, batches)
        print(f"logits, tinyft vs nanoGPT's model.py on 4 x 8 x {result.model.config.block_size} validation "
              f"positions: max |difference| {worst:.3g} (largest |logit| {largest:.3g})")
        prompt = result.tokenizer.encode("The ")[None, :]
        ours, theirs, first = greedy_ids(torch, nano_model, result.model, prompt, 200)
        print(f"greedy generation of 200 tokens: {'identical' if first is None else f'first difference at id {first}'}")
        entry = {"max_abs_logit_difference": worst, "max_abs_logit": largest, "greedy_first_difference": first,
                 "greedy_text": result.tokenizer.decode(ours[0])}
        if gelu == "exact":
            entry["optimizer"] = optimizer_check(torch, args.nanogpt, os.path.join(export_dir, "ckpt.pt"),
                                                 result.checkpoint, batches[0])
            print(f"optimizer: nanoGPT's configure_optimizers() groups {entry['optimizer']['groups']} loaded the "
                  f"state; moments and steps equal: {entry['optimizer']['moments_equal']}; after one step from the "
                  f"same batch: weights moved up to {entry['optimizer']['max_update']:.3g}, the two frameworks "
                  f"differ by up to {entry['optimizer']['max_weight_difference_after_step']:.3g}")
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                back = export.import_checkpoint(os.path.join(export_dir, "ckpt.pt"), os.path.join(work, "back"))
            entry["round_trip"] = round_trip(result.checkpoint, back["checkpoint"])
            print(f"import back: {entry['round_trip']}")
            if not args.no_scripts:
                scripts = run_scripts(args.nanogpt, work, export_dir, result.tokenizer, prepared["train"],
                                      prepared["val"], result.model.config.block_size, summary["iter_num"])
                ours_text = result.tokenizer.decode(result.model.generate(scripts["prompt"], 120, temperature=0)[0])
                entry["sample_py_text_equal"] = scripts["sample_text"] == ours_text
                print(f"nanoGPT's sample.py (top_k=1) printed the same text as tinyft's greedy generate: "
                      f"{entry['sample_py_text_equal']}\n  {ours_text[:100]!r}")
                print("nanoGPT's train.py --init_from=resume:\n  " + "\n  ".join(scripts["train_log"][:8]))
                with warnings.catch_warnings(record=True):
                    warnings.simplefilter("always")
                    again = export.import_checkpoint(scripts["trained_ckpt"], os.path.join(work, "again"),
                                                          vocab=os.path.join(export_dir, "meta.pkl"))
                trained, saved = load_like_sample(torch, nanogpt, scripts["trained_ckpt"])
                worst2, _ = compare_logits(torch, trained, checkpoint.load_model(again["checkpoint"]), batches)
                entry["after_nanogpt_training"] = {"iter_num": saved["iter_num"], "step_imported": again["step"],
                                                   "max_abs_logit_difference": worst2}
                print(f"train.py's own checkpoint (iter_num {saved['iter_num']}) imported into tinyft: logits "
                      f"differ from nanoGPT's by up to {worst2:.3g}")
        report[gelu] = entry
    tanh_result = runs["tanh"][0]
    exact_twin = GPT(GPTConfig(**{**tanh_result.model.config.to_dict(), "gelu": "exact"}))
    exact_twin.load_state_dict(tanh_result.model.state_dict())
    twin_diff = max(float(np.abs(tanh_result.model(x)[0].data - exact_twin(x)[0].data).max()) for x, _ in batches)
    report["tanh"]["same_weights_exact_vs_tanh_in_tinyft"] = twin_diff
    print(f"\ntanh model run with the exact GELU inside tinyft: logits differ by up to {twin_diff:.3g} "
          "(the GELU alone; nanoGPT's figure above is this plus float32 rounding)")
    print("\n== a model made by nanoGPT's code, imported into tinyft")
    report["native"] = native_check(torch, nanogpt, work, runs["exact"][0].tokenizer.decode(runs["exact"][1]["val"]))
    print({k: v for k, v in report["native"].items() if k != "notes"})
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
