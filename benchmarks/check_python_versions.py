"""Same data, same numbers on every supported Python: install tinyft under each CPython 3.10-3.13 here and compare.

Map of this script:
  find_pythons()   the CPython 3.10-3.13 interpreters of this machine (pyenv's versions folder, or --python PATH)
  make_venv()      a virtual environment per Python under --venv-root (default /tmp/tinyft-pythons), then
                   `pip install <repo>` (or '<repo>[dev]' with --suite): dependencies come from PyPI, nothing pinned
  PROBE            runs inside each venv, outside the repository (so it imports the INSTALLED package and its
                   snapshot): versions, BLAS, sha256 of the corpora and of every built-in task's splits, and the
                   losses of a seeded 50-step pretraining of a tiny GPT (2 layers, 4 heads, n_embd 64, batch 8,
                   block 64), with the Numba kernels (twice) and with the NumPy twins
  main()           one table: a row per quantity, a column per Python, and whether they all agree
Usage: python benchmarks/check_python_versions.py [--python PATH ...] [--suite] [--blas-coretypes CORE ...] [--json]
--suite also runs `python -m pytest -q --ignore=tests/test_notebooks.py` from the repository root in each venv.
Not part of the test suite: it creates environments, installs packages and takes minutes per Python.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
PYENV_VERSIONS = pathlib.Path("/root/.pyenv/versions")
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")

PROBE = r'''
import hashlib, json, os, platform, tempfile, warnings
import numpy as np, numba, threadpoolctl
import tinyft
from tinyft import data, kernels, tasks
from tinyft.pretrain import PretrainConfig, pretrain
from tinyft.tokenizers import CharTokenizer

def sha_text(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

out = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
       "tinyft from site-packages": "site-packages" in tinyft.__file__,
       "blas": "; ".join(f"{i['internal_api']} {i['version']} {i.get('architecture', '')} ({i['num_threads']} threads)"
                         for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")}
for name in ("broad", "stdlib_code", "stdlib_code_shifted", "license", "broad-live"):
    text = data.load_corpus(name)
    out[f"sha256 {name}"], out[f"characters {name}"] = sha_text(text), len(text)
out["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "(auto)")
tok = CharTokenizer.build([data.broad_corpus(), data.domain_corpus("stdlib_code")])
out["char vocabulary"] = tok.vocab_size
for name in tasks.TASKS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # describe caps n_examples
        task = tasks.build_task(name, tok)
    digest = hashlib.sha256()
    for split in ("train", "val", "test", "shifted"):
        items = getattr(task, split)
        if isinstance(items, np.ndarray):  # token ids (code)
            digest.update(items.astype("<i8").tobytes())
        else:  # Examples (kind, describe)
            for e in items:
                digest.update(json.dumps([e.prompt, e.answer, e.label, e.group]).encode("utf-8"))
    out[f"sha256 task {name}"] = digest.hexdigest()

def losses(path):
    config = PretrainConfig(n_layer=2, n_head=4, n_embd=64, block_size=64, batch_size=8, steps=50, warmup_steps=5,
                            eval_every=50, eval_batches=4, checkpoint_every=50, sample_tokens=1, seed=0,
                            out=tempfile.mkdtemp(prefix="tinyft-check-"))
    with kernels.use(path):
        result = pretrain(config, progress=False, log=lambda *args, **kwargs: None)
    return [row["train_loss"] for row in result.history], result.final_val_loss

out["losses numba"], out["val numba"] = losses("numba")
out["losses numba again"], out["val numba again"] = losses("numba")
out["losses numpy"], out["val numpy"] = losses("numpy")
print(json.dumps(out))
'''


def find_pythons(paths):
    """[(label, path)] of the interpreters to check: the given paths, else pyenv's 3.10-3.13."""
    if paths:
        return [(pathlib.Path(p).resolve().parent.parent.name, pathlib.Path(p)) for p in paths]
    found = []
    for folder in sorted(PYENV_VERSIONS.glob("3.*"), key=lambda p: tuple(int(x) for x in p.name.split("."))):
        if ".".join(folder.name.split(".")[:2]) in SUPPORTED and (folder / "bin" / "python").is_file():
            found.append((folder.name, folder / "bin" / "python"))
    return found


def clean_env(**extra):
    """This process's environment without what would make a venv import the wrong tinyft, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "venv" not in p)
    return {**env, **extra}


def run(command, cwd=None, log=None, **extra_env):
    """Run a command; raise with its output when it fails."""
    done = subprocess.run(command, cwd=cwd, env=clean_env(**extra_env), capture_output=True, text=True)
    if log is not None:
        log.write(f"$ {' '.join(map(str, command))}\n{done.stdout}{done.stderr}\n")
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def make_venv(label, python, root, extras, log):
    venv = root / f"py{label}"
    if not (venv / "bin" / "python").is_file():
        run([python, "-m", "venv", venv], log=log)
        run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip"], log=log)
    target = f"{REPO}[{extras}]" if extras else str(REPO)
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", target], log=log)  # rebuilds tinyft from REPO
    return venv / "bin" / "python"


def table(results):
    """Rows: quantities; columns: Pythons; last column: do they all agree."""
    labels = list(results)
    reference = "3.11.7" if "3.11.7" in results else labels[0]
    rows = []
    first = results[labels[0]]
    for key in first:
        if key.startswith("losses"):
            continue
        values = [results[label].get(key) for label in labels]
        same = "same" if all(v == values[0] for v in values) else "DIFFER"
        if key in ("python", "sha256 broad-live", "characters broad-live"):
            same = "" if key == "python" else same + " (by design: this Python's own text)"
        shown = [v[:16] if isinstance(v, str) and key.startswith("sha256") else
                 f"{v:.12f}" if isinstance(v, float) else str(v) for v in values]
        rows.append([key] + shown + [same])
    for path in ("numba", "numba again", "numpy"):
        for step in (1, 10, 50):
            values = [results[label][f"losses {path}"][step - 1] for label in labels]
            same = "same" if all(v == values[0] for v in values) else "DIFFER"
            rows.append([f"loss step {step} ({path})"] + [f"{v:.12f}" for v in values] + [same])
        ref = results[reference][f"losses {path}"]
        worst = [max(abs(a - b) for a, b in zip(results[label][f"losses {path}"], ref)) for label in labels]
        rows.append([f"max |loss - {reference}| over 50 steps ({path})"] + [f"{w:.2e}" for w in worst] + [""])
    within = [results[label]["losses numba"] == results[label]["losses numba again"] for label in labels]
    rows.append(["numba run repeated bit-identically"] + [str(w) for w in within] + [""])
    header = ["quantity"] + labels + ["all columns"]
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    lines = [" | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header] + rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", nargs="*", default=None, help="interpreters to check (default: pyenv's 3.10-3.13)")
    parser.add_argument("--venv-root", default="/tmp/tinyft-pythons", help="where the venvs go (default: %(default)s)")
    parser.add_argument("--suite", action="store_true", help="also run the test suite (without notebooks) in each venv")
    parser.add_argument("--blas-coretypes", nargs="*", default=(), metavar="CORE",
                        help="also probe the first Python with OPENBLAS_CORETYPE=CORE (e.g. Haswell Sandybridge): "
                             "how much another CPU's BLAS kernels move the losses")
    parser.add_argument("--json", action="store_true", help="print every result as JSON on the last line")
    args = parser.parse_args()
    pythons = find_pythons(args.python)
    if not pythons:
        sys.exit(f"no CPython {', '.join(SUPPORTED)} found under {PYENV_VERSIONS}; pass --python PATH ...")
    root = pathlib.Path(args.venv_root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "probe.py").write_text(PROBE)
    results, suites = {}, {}
    with open(root / "log.txt", "a") as log:
        for label, python in pythons:
            t0 = time.perf_counter()
            venv_python = make_venv(label, python, root, "dev" if args.suite else "", log)
            results[label] = json.loads(run([venv_python, root / "probe.py"], cwd=root, log=log).strip().split("\n")[-1])
            print(f"{label}: installed and probed in {time.perf_counter() - t0:.0f} s "
                  f"(NumPy {results[label]['numpy']}, Numba {results[label]['numba']})", flush=True)
            if args.suite:
                done = subprocess.run([venv_python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                       "--ignore=tests/test_notebooks.py"], cwd=REPO, env=clean_env(),
                                      capture_output=True, text=True)
                log.write(done.stdout[-20000:] + done.stderr[-5000:])
                suites[label] = done.stdout.strip().split("\n")[-1]
                print(f"{label}: suite: {suites[label]}", flush=True)
        first_label, first_python = pythons[0]
        for core in args.blas_coretypes:
            venv_python = root / f"py{first_label}" / "bin" / "python"
            output = run([venv_python, root / "probe.py"], cwd=root, log=log, OPENBLAS_CORETYPE=core)
            results[f"{first_label} {core}"] = json.loads(output.strip().split("\n")[-1])
            print(f"{first_label} with OPENBLAS_CORETYPE={core}: probed", flush=True)
    print()
    print(table(results))
    for label, line in suites.items():
        print(f"suite on {label}: {line}")
    if args.json:
        print(json.dumps({"results": results, "suites": suites}))


if __name__ == "__main__":
    main()
