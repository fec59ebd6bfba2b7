"""Checkpoints: a model, its optimizer and everything needed to resume, in one safe .npz file.

Map of this file:
  1. The format       an .npz (a zip of .npy files): model/<name>, optim/state/<i>/<key>, __meta__ (UTF-8 JSON
                      with config, step, RNG state, tokenizer, a sha256 per array); sha256 of the file at its end
  2. save()           validate, then atomic_write(): a temp file in the same folder, fsync, os.replace
  3. load()           np.load(allow_pickle=False), read every array, check every checksum; every failure
                      is a CheckpointError naming the file and the entry
  4. restore(), load_model(), load_model_and_optimizer()   rebuilding is one call
  5. Where to write   check_output_folder (before any work, creating nothing), refuse_own_input (an output is
                      never an input, whatever the spelling), stale temp files of a killed save cleaned
Nothing in a checkpoint is ever executed: no pickle, ever (docs/optim.md, "Checkpoints", says why).
"""

import contextlib
import hashlib
import json
import os
import re
import struct
import time
import tempfile
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from .autograd import get_rng_state, rng_preserved, set_rng_state
from .kernels import thread_settings
from .optim import OPTIMIZERS

# ----------------------------------------------------------------------------------------------------
# 1. The format
# ----------------------------------------------------------------------------------------------------

FORMAT = "tinyft-checkpoint"
VERSION = 1
META_ENTRY = "__meta__"
DIGEST_PREFIX = b"tinyft-sha256="  # the zip comment: this prefix, then the file's sha256 as 64 hex digits
DIGEST_LEN = 64
RESERVED_META_KEYS = ("format", "version", "model_class", "config", "optimizer", "arrays")

# What a damaged file can make zipfile, numpy's .npy header parser (tokenize, ast) and json raise while we
# read it (found by flipping bytes, see tests/test_checkpoint.py). All of them mean "this file is broken".
READ_ERRORS = (zipfile.BadZipFile, zlib.error, struct.error, OSError, EOFError, ValueError, KeyError, IndexError,
               TypeError, SyntaxError, tokenize.TokenError, RuntimeError, NotImplementedError, OverflowError,
               MemoryError)


class CheckpointError(ValueError):
    """A checkpoint file cannot be loaded (or does not fit the model): the message says what and where."""


@dataclass
class Checkpoint:
    """What load() returns. Arrays are plain np.ndarrays; nothing refers back to the file."""

    model_state: dict  # name -> array, as Module.state_dict()
    optimizer_state: dict | None  # as Optimizer.state_dict(), or None when saved without an optimizer
    meta: dict  # the __meta__ JSON: format, version, config, step, rng_state, tokenizer, your **meta, ...
    config: dict | None = None  # meta["config"]: the model's config as a dict (GPTConfig.from_dict takes it)
    path: str = field(default="", repr=False)


def _sha256(array):
    """Checksum of an array's bytes in C order (dtype and shape are checked separately)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _numeric(name, value):
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"checkpoint.save: entry {name} has dtype {array.dtype}; only numeric arrays are stored")
    return array


def _json_check(key, value):
    try:
        json.dumps(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint.save: meta[{key!r}] (a {type(value).__name__}) is not JSON-serialisable "
                        f"({e}); pass numbers, strings, lists, dicts (NumPy scalars: use float() or int())") from None


# ----------------------------------------------------------------------------------------------------
# 2. save
# ----------------------------------------------------------------------------------------------------


def save(path, model, optimizer=None, **meta):
    """Write model (and optimizer) to `path` as one .npz; replaces an existing file only when complete.

    meta: anything JSON-serialisable; `step` and `tokenizer` (a dict, or an object with to_dict()) are
    the usual ones. `rng_state` defaults to tinyft's get_rng_state(), `threads` to kernels.thread_settings()
    (the Numba and BLAS thread counts: sums are split across threads, so the last bits of a result can depend
    on them). The folder must already exist.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"checkpoint.save: folder {folder!r} does not exist; create it first")
    for key in RESERVED_META_KEYS:
        if key in meta:
            raise ValueError(f"checkpoint.save: meta key {key!r} is reserved (it is filled in from the model "
                             f"and optimizer); reserved keys: {', '.join(RESERVED_META_KEYS)}")

    arrays = {}  # entry name -> array
    for name, value in model.state_dict().items():
        arrays[f"model/{name}"] = _numeric(f"model/{name}", value)

    tokenizer = meta.pop("tokenizer", None)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": type(model).__name__,
        "config": model.config.to_dict() if hasattr(model, "config") else None,
        "optimizer": None,
        "step": meta.pop("step", None),
        "rng_state": meta.pop("rng_state", get_rng_state()),
        "tokenizer": tokenizer.to_dict() if hasattr(tokenizer, "to_dict") else tokenizer,
        "threads": meta.pop("threads", thread_settings()),  # results differ (slightly) between thread counts
    }
    if optimizer is not None:
        sd = optimizer.state_dict()
        header["optimizer"] = {"class": sd["class"], "defaults": optimizer.defaults,
                               "check_finite": optimizer.check_finite, "param_groups": sd["param_groups"]}
        for index, entry in sd["state"].items():
            for key, value in entry.items():
                arrays[f"optim/state/{index}/{key}"] = _numeric(f"optim/state/{index}/{key}", value)
    header.update(meta)
    for key, value in header.items():
        _json_check(key, value)
    header["arrays"] = {name: {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": _sha256(a)}
                        for name, a in arrays.items()}
    arrays[META_ENTRY] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: _write_npz(f, arrays))


def atomic_write(path, data):
    """Write `data` to `path` so that a reader sees the old file or the new one, never half of one.

    data: bytes, a str (written as UTF-8), or a function write(f) that writes into the binary file f
    (readable and seekable: save() streams its .npz into it, then reads it back for the checksum).
    The bytes go to a temp file in the same folder (same file system, so the rename is atomic), which is
    flushed, fsync'ed and os.replace'd over `path`; if anything fails (even Ctrl-C) it is removed and the
    old file is untouched. The folder must exist. save(), data.download() and the experiment tables use it.
    A writer killed outright (kill -9, power cut) cannot remove its temp file; the next write of the same
    file removes such leftovers (remove_stale_temps). The temp name carries the writer's pid for that.
    """
    folder, base = os.path.split(os.path.abspath(path))
    remove_stale_temps(folder, base)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.pid{os.getpid()}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise type(e)(f"cannot write {base!r}: cannot create a file in folder {folder!r} ({e.strerror})") from e
    try:
        with os.fdopen(fd, "w+b") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600); give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError, AttributeError):  # make the rename itself durable (POSIX only)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


STALE_UNNAMED_SECONDS = 600  # a temp file without a pid in its name is left alone for this long
STALE_ORPHAN_SECONDS = 60  # one whose writer has exited: not touched for a minute (another machine's writer?)


def _pid_running(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: no signal sent, only "does it exist?"
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's process), or we cannot tell: keep its file
    return True


def remove_stale_temps(folder, base, now=None):
    """Remove the temp files a killed atomic_write of `base` left in `folder`; returns the names removed.

    A temp file is `.{base}.pid{PID}.{random}.tmp`. It is stale when process PID no longer runs and the file
    was last written over a minute ago; one without a pid in its name (an older tinyft) when it is older than
    ten minutes. A live writer's file is never touched: its pid runs, and its mtime moves as it writes.
    """
    now = time.time() if now is None else now
    pattern = re.compile(re.escape(f".{base}.") + r"(?:pid(\d+)\.)?[^/]*\.tmp")
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if not match:
            continue
        path = os.path.join(folder, name)
        try:
            age = now - os.lstat(path).st_mtime
        except OSError:
            continue  # already gone
        pid = int(match.group(1)) if match.group(1) else None
        stale = (age > STALE_ORPHAN_SECONDS and not _pid_running(pid)) if pid is not None \
            else age > STALE_UNNAMED_SECONDS
        if stale:
            with contextlib.suppress(OSError):
                os.remove(path)
                removed.append(name)
    return removed


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_npz(f, arrays):
    """What np.savez does (one .npy per array in an uncompressed zip), then a sha256 of the whole file.

    The digest goes in the zip comment, the last bytes of the file: first a placeholder, then the
    sha256 of every byte before it. load() recomputes it, so a flip anywhere (zip headers included) shows.
    """
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, array, allow_pickle=False)
        zf.comment = DIGEST_PREFIX + b"0" * DIGEST_LEN
    size = f.seek(0, os.SEEK_END)
    digest = _sha256_of_file(f, size - DIGEST_LEN)
    f.seek(size - DIGEST_LEN)
    f.write(digest)


def _sha256_of_file(f, nbytes, chunk=1 << 20):
    h = hashlib.sha256()
    f.seek(0)
    while nbytes > 0:
        data = f.read(min(chunk, nbytes))
        if not data:
            break
        h.update(data)
        nbytes -= len(data)
    return h.hexdigest().encode("ascii")


# ----------------------------------------------------------------------------------------------------
# 3. load
# ----------------------------------------------------------------------------------------------------


def load(path):
    """Read and verify a checkpoint. Returns a Checkpoint; raises CheckpointError on any problem.

    Order: is it a zip -> __meta__ (format, version, manifest) -> every array read in full (np.load is
    lazy), each checked against the manifest (dtype, shape, sha256) -> the file's own sha256 last, which
    catches what the per-entry checks cannot see (zip headers, __meta__ itself, truncation).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head != b"PK\x03\x04":
                raise CheckpointError(f"{path!r} is not a checkpoint: not an .npz (zip) file "
                                      f"(it starts with {head!r})")
            digest = _file_digest_status(f)  # "ok", "missing" or "mismatch"
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {e.strerror or e}") from e
    also = "; the file's own sha256 does not match either" if digest == "mismatch" else ""

    entry = None  # the entry being read, for the error message
    try:
        with np.load(path, allow_pickle=False) as npz:
            if META_ENTRY not in npz.files:
                raise CheckpointError(f"{path!r}: no {META_ENTRY} entry, so this .npz is not a tinyft checkpoint "
                                      f"(entries: {', '.join(npz.files[:5])}{', ...' if len(npz.files) > 5 else ''})")
            entry = META_ENTRY
            meta = _read_meta(npz, path)
            arrays = {}
            for entry in npz.files:
                if entry != META_ENTRY:
                    arrays[entry] = _read_entry(npz, entry, meta["arrays"], path)
    except CheckpointError as e:
        raise CheckpointError(str(e) + also) from None
    except READ_ERRORS as e:
        where = f"entry {entry}" if entry else "the zip directory"
        raise CheckpointError(f"{path!r}: cannot read {where}: the file is truncated or corrupted "
                              f"({type(e).__name__}: {e}){also}") from e

    missing = sorted(set(meta["arrays"]) - set(arrays))
    if missing:
        raise CheckpointError(f"{path!r}: entries listed in {META_ENTRY} are missing: {', '.join(missing)}{also}")
    if digest == "missing":
        raise CheckpointError(f"{path!r}: no {DIGEST_PREFIX.decode()} checksum at the end of the file: it was cut "
                              "short, or not written by tinyft.checkpoint.save")
    if digest == "mismatch":
        raise CheckpointError(f"{path!r}: file checksum mismatch: the sha256 stored at the end of the file does "
                              f"not match its bytes (zip headers or {META_ENTRY} changed, or the file was cut short)")
    return _assemble(path, meta, arrays)


def _file_digest_status(f):
    """Compare the sha256 stamped at the end of the file (see _write_npz) with its bytes."""
    size = f.seek(0, os.SEEK_END)
    stamp_len = len(DIGEST_PREFIX) + DIGEST_LEN
    if size < stamp_len:
        return "missing"
    f.seek(size - stamp_len)
    stamp = f.read()
    if not stamp.startswith(DIGEST_PREFIX):
        return "missing"
    return "ok" if stamp[len(DIGEST_PREFIX):] == _sha256_of_file(f, size - DIGEST_LEN) else "mismatch"


def _read_array(npz, entry, path):
    try:
        return npz[entry]  # reads the whole array now
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise CheckpointError(f"{path!r}: entry {entry} holds Python objects, which only pickle can load; "
                                  "tinyft never unpickles (code in a pickle runs on load)") from None
        raise


def _read_meta(npz, path):
    raw = _read_array(npz, META_ENTRY, path)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path!r}: entry {META_ENTRY} must be 1-D uint8 (UTF-8 JSON), "
                              f"got {raw.dtype} {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{path!r}: entry {META_ENTRY} is not valid UTF-8 JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path!r}: entry {META_ENTRY} must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path!r}: entry {META_ENTRY} says format {meta.get('format')!r}, "
                              f"expected {FORMAT!r}: not a tinyft checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path!r}: entry {META_ENTRY}: checkpoint version {meta.get('version')!r} is not "
                              f"supported (this tinyft reads version {VERSION})")
    manifest = meta.get("arrays")
    if not isinstance(manifest, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("dtype"), str) and isinstance(v.get("shape"), list)
            and isinstance(v.get("sha256"), str) for v in manifest.values()):
        raise CheckpointError(f"{path!r}: entry {META_ENTRY}: 'arrays' must map each entry to its dtype, shape "
                              "and sha256")
    return meta


def _read_entry(npz, entry, manifest, path):
    array = _read_array(npz, entry, path)
    if array.dtype.kind not in "biuf":
        raise CheckpointError(f"{path!r}: entry {entry} has non-numeric dtype {array.dtype}")
    info = manifest.get(entry)
    if info is None:
        raise CheckpointError(f"{path!r}: entry {entry} is not listed in {META_ENTRY}")
    if array.dtype.str != info["dtype"] or list(array.shape) != info["shape"]:
        raise CheckpointError(f"{path!r}: entry {entry} is {array.dtype.str} {tuple(array.shape)}, but "
                              f"{META_ENTRY} lists {info['dtype']} {tuple(info['shape'])}")
    if _sha256(array) != info["sha256"]:
        raise CheckpointError(f"{path!r}: checksum mismatch in entry {entry}: its bytes were changed")
    return array


def _assemble(path, meta, arrays):
    """Split the entries back into the model's state_dict and the optimizer's state_dict."""
    model_state, optim_state = {}, {}
    for entry, array in arrays.items():
        if entry.startswith("model/"):
            model_state[entry[len("model/"):]] = array
            continue
        parts = entry.split("/")
        is_optim_state = len(parts) == 4 and parts[:2] == ["optim", "state"] and parts[2].isdigit()
        if not is_optim_state or meta.get("optimizer") is None:
            raise CheckpointError(f"{path!r}: unexpected entry {entry} (expected model/<name> or "
                                  "optim/state/<index>/<key>)")
        optim_state.setdefault(int(parts[2]), {})[parts[3]] = array
    optimizer_state = None
    if meta.get("optimizer") is not None:
        opt = meta["optimizer"]
        if not isinstance(opt, dict) or "class" not in opt or not isinstance(opt.get("param_groups"), list):
            raise CheckpointError(f"{path!r}: entry {META_ENTRY}: 'optimizer' must hold 'class' and 'param_groups'")
        optimizer_state = {"class": opt["class"], "param_groups": opt["param_groups"], "state": optim_state}
    return Checkpoint(model_state=model_state, optimizer_state=optimizer_state, meta=meta,
                      config=meta.get("config"), path=path)


# ----------------------------------------------------------------------------------------------------
# 4. Rebuilding: restore into existing objects, or build them from the checkpoint
# ----------------------------------------------------------------------------------------------------


def restore(path, model, optimizer=None, restore_rng=False):
    """Load weights (and optimizer state, and tinyft's RNG state if asked) into existing objects; return meta.

    Everything is checked before anything changes: names and shapes must fit the model exactly.
    """
    ckpt = load(path)
    _check_fits(ckpt, model)
    if restore_rng and not isinstance(ckpt.meta.get("rng_state"), dict):
        raise CheckpointError(f"{ckpt.path!r}: restore_rng=True but the checkpoint holds no rng_state")
    if optimizer is not None:
        _load_optimizer_state(ckpt, optimizer)  # validates everything before changing the optimizer
    model.load_state_dict(ckpt.model_state)
    if restore_rng:
        try:
            set_rng_state(ckpt.meta["rng_state"])
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{ckpt.path!r}: entry {META_ENTRY}: rng_state cannot be restored ({e})") from None
    return ckpt.meta


def load_model(path):
    """Rebuild the GPT a checkpoint holds: GPT(GPTConfig.from_dict(meta["config"])) with its weights.

    Building a GPT draws initial weights from tinyft's RNG; its state is put back afterwards, so
    loading a model does not change the random stream.
    """
    return _build_model(load(path))


def load_model_and_optimizer(path):
    """Rebuild model and optimizer to resume training: returns (model, optimizer, meta).

    The optimizer's class and param groups come from the checkpoint; groups are matched to parameters by
    their "names" (as param_groups_for_weight_decay makes them), or, for one unnamed group, by order of
    model.parameters(). requires_grad flags are not stored: freeze again what was frozen.
    """
    ckpt = load(path)
    model = _build_model(ckpt)
    opt = ckpt.optimizer_state
    if opt is None:
        raise CheckpointError(f"{ckpt.path!r}: saved without an optimizer; use load_model()")
    cls = OPTIMIZERS.get(opt["class"])
    if cls is None:
        raise CheckpointError(f"{ckpt.path!r}: unknown optimizer class {opt['class']!r} "
                              f"(known: {', '.join(OPTIMIZERS)})")
    named, params = dict(model.named_parameters()), list(model.parameters())
    groups = []
    for gi, saved in enumerate(opt["param_groups"]):
        group = {k: v for k, v in saved.items() if k != "params"}
        if "names" in saved:
            unknown = [n for n in saved["names"] if n not in named]
            if unknown:
                raise CheckpointError(f"{ckpt.path!r}: optimizer param group {gi} names parameters the model "
                                      f"does not have: {', '.join(unknown[:5])}")
            group["params"] = [named[n] for n in saved["names"]]
        elif len(opt["param_groups"]) == 1 and len(saved["params"]) == len(params):
            group["params"] = params
        else:
            raise CheckpointError(f"{ckpt.path!r}: optimizer param group {gi} has no 'names', so its parameters "
                                  "cannot be found; build the optimizer yourself and call restore()")
        groups.append(group)
    try:
        check_finite = bool(ckpt.meta["optimizer"].get("check_finite", False))
        optimizer = cls(groups, lr=groups[0].get("lr", 1e-3), check_finite=check_finite)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt.path!r}: entry {META_ENTRY}: optimizer settings rejected ({e})") from None
    _load_optimizer_state(ckpt, optimizer)
    return model, optimizer, ckpt.meta


def _build_model(ckpt):
    from .nn import GPT, GPTConfig  # same layer; imported here so save()/load() need only a state_dict()

    if ckpt.config is None or ckpt.meta.get("model_class") != "GPT":
        raise CheckpointError(f"{ckpt.path!r}: holds a {ckpt.meta.get('model_class')!r} without a GPT config; "
                              "build the model yourself and call restore(path, model)")
    try:
        config = GPTConfig.from_dict(ckpt.config)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{ckpt.path!r}: entry {META_ENTRY}: config {ckpt.config} is not a valid "
                              f"GPTConfig ({e})") from None
    with rng_preserved():  # building draws initial weights; the loaded ones replace them
        model = GPT(config)
    _check_fits(ckpt, model)
    model.load_state_dict(ckpt.model_state)
    return model


def _check_fits(ckpt, model):
    """Names and shapes of the saved weights must equal the model's: list every difference."""
    expected = {name: np.shape(a) for name, a in model.state_dict().items()}
    saved = {name: a.shape for name, a in ckpt.model_state.items()}
    problems = [f"model/{n} missing from the file" for n in expected if n not in saved]
    problems += [f"model/{n} in the file but not in the model" for n in saved if n not in expected]
    problems += [f"model/{n} has shape {saved[n]} in the file, {expected[n]} in the model"
                 for n in expected if n in saved and saved[n] != expected[n]]
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise CheckpointError(f"{ckpt.path!r}: the weights do not fit this {type(model).__name__}: "
                              + "; ".join(problems[:8]) + more)


def _load_optimizer_state(ckpt, optimizer):
    if ckpt.optimizer_state is None:
        raise CheckpointError(f"{ckpt.path!r}: the checkpoint holds no optimizer state")
    try:
        optimizer.load_state_dict(ckpt.optimizer_state)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt.path!r}: the optimizer state (entries optim/...) does not fit: {e}") from None


# ----------------------------------------------------------------------------------------------------
# 5. Where to write: checked before any work, so a mistake costs nothing and creates nothing
# ----------------------------------------------------------------------------------------------------


def check_output_folder(out, files=(), argument="--out"):
    """ValueError (naming `argument`) unless `out` is, or can become, a writable folder holding `files`.

    Creates nothing: the commands call it before any work and make the folder only when they first write,
    so a run refused for any reason leaves no empty folder behind. Each of `files` (the names the command
    writes into `out`) must not be a folder already (saving over a folder would fail after the training).
    """
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise ValueError(f"{argument} must be a folder path, got {out!r}")
    out = os.fspath(out)
    if os.path.lexists(out) and not os.path.exists(out):
        raise ValueError(f"{argument} {out!r} is a broken symbolic link; remove it or choose another folder")
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise ValueError(f"{argument} {out!r} is a file, not a folder; choose a folder (it is created if missing)")
        if not os.access(out, os.W_OK | os.X_OK):
            raise ValueError(f"{argument} {out!r} is not writable; choose a folder you can write to")
        for name in files:
            target = os.path.join(out, name)
            if os.path.isdir(target):
                raise ValueError(f"{argument} {out!r}: {target} is a folder, so {name} cannot be saved there; "
                                 f"remove that folder or choose another {argument}")
        return
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"{argument} {out!r} cannot be created: {parent!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{argument} {out!r} cannot be created: {parent!r} is not writable; choose a folder "
                         "you can write to")


def same_file(a, b):
    """True when paths a and b name the same file, however spelled (relative, '..', symlinks, hard links)."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, case-insensitive file systems
    except OSError:  # one of them does not exist (yet): realpath already said they differ
        return False


def refuse_own_input(outputs, inputs, argument="--out", input_argument="--from"):
    """ValueError when a file the command would write (`outputs`) is one of the files it reads (`inputs`).

    Compares resolved paths, so `D`, `./D/`, `/abs/D` and a symlink to D are one folder: a command never
    writes over its own input. inputs: paths (None entries are skipped) or (path, argument name) pairs.
    """
    for source in inputs:
        source, named = source if isinstance(source, tuple) else (source, input_argument)
        if source is None:
            continue
        for target in outputs:
            if same_file(target, source):
                raise ValueError(f"{argument}: {target} would be written over {named} {os.fspath(source)!r}, the "
                                 f"file this command reads; pass another {argument}")
