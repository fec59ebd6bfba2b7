"""export: the files of the way out to PyTorch and back: a tinyft checkpoint as nanoGPT's ckpt.pt and meta.pkl,
or as a safetensors file; and either kind read back into a tinyft checkpoint.

Map of this file:
  export_nanogpt      ckpt.npz -> out_dir/ckpt.pt (model, model_args, optimizer, iter_num, best_val_loss, config)
                      + meta.pkl (character vocabulary) + tinyft_tokenizer.json; needs PyTorch
  export_safetensors  ckpt.npz -> one .safetensors file (nanoGPT names, the tied weight once, config in metadata)
  import_checkpoint   ckpt.pt (weights_only loading) or .safetensors -> out_dir/ckpt.npz that finetune --from reads
The mappings themselves (names, dtypes, optimizer groups, the safetensors format) are pure NumPy, in
interchange.py. `python -m tinyft export` and `import` (cli.py) call these; docs/outgrow.md shows the way.
"""

import json
import os
import pickle
import re
import zipfile

import numpy as np

from . import checkpoint
from .autograd import get_rng_state, set_rng_state
from .nn import GELU_KINDS, GPT, GPTConfig


from .interchange import (
    InterchangeError,
    _atomic_write_bytes,
    _cast_note,
    _note,
    as_float32,
    bfloat16_bits_to_float32,
    build_tinyft_adamw,
    clean_nanogpt_state,
    config_from_model_args,
    from_nanogpt_state,
    gelu_warning,
    infer_config,
    model_args_from_config,
    nanogpt_param_groups,
    optimizer_from_nanogpt,
    optimizer_to_nanogpt,
    read_safetensors,
    to_nanogpt_state,
    write_safetensors,
)


# ----------------------------------------------------------------------------------------------------
# 5. Files: export to nanoGPT / safetensors, import from either
# ----------------------------------------------------------------------------------------------------

NANOGPT_CHECKPOINT = "ckpt.pt"  # what nanoGPT's train.py (init_from='resume') and sample.py read from out_dir
NANOGPT_META = "meta.pkl"  # nanoGPT's character vocabulary: {"vocab_size", "itos", "stoi"}
TOKENIZER_JSON = "tinyft_tokenizer.json"  # tinyft's tokenizer, exactly (char or BPE), for the way back
TINYFT_CHECKPOINT = "ckpt.npz"  # what import writes into out_dir (the name pretrain uses)
UNKNOWN_CHAR = "\ufffd"  # tinyft's CharTokenizer: id 0 is <unk>, decoded as this character
META_PKL_MAX_BYTES = 64 * 1024 * 1024
TORCH_HINT = ("pip install torch (the CPU-only build is enough: PyTorch's install page gives the command for "
              "your system)")


def _require_torch(what):
    try:
        import torch
    except ImportError:
        raise InterchangeError(f"{what} needs PyTorch, which is not installed: {TORCH_HINT}") from None
    return torch


def _check_input_file(path, argument):
    if not isinstance(path, (str, os.PathLike)):
        raise InterchangeError(f"{argument} must be a path, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InterchangeError(f"{argument} {path!r}: no such file")
    return path


def _check_output_file(path, inputs, overwrite, argument):
    """The output must not be an input, must not clobber a file unless overwrite, and its folder must exist."""
    for source in inputs:
        if os.path.exists(path) and os.path.samefile(path, source) or \
                os.path.realpath(path) == os.path.realpath(source):
            raise InterchangeError(f"{argument}: {path!r} is the input file; choose another output (tinyft never "
                                   "writes over its input)")
    if os.path.exists(path) and not overwrite:
        raise InterchangeError(f"{argument}: {path!r} already exists; remove it, choose another place, or pass "
                               "overwrite=True")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InterchangeError(f"{argument}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise InterchangeError(f"{argument}: folder {folder!r} is not writable")


def _check_out_dir_files(out_dir, outputs, inputs, overwrite):
    """Check the files a command will write into out_dir (which may not exist yet: its parent must be writable)."""
    if os.path.isdir(out_dir):
        for path in outputs:
            _check_output_file(path, inputs, overwrite, "out_dir")
        return
    parent = os.path.dirname(os.path.abspath(out_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise InterchangeError(f"out_dir {out_dir!r} cannot be created: {parent!r} is not a writable folder")


def _make_out_dir(out_dir, argument):
    if not isinstance(out_dir, (str, os.PathLike)):
        raise InterchangeError(f"{argument} must be a folder path, got {type(out_dir).__name__}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InterchangeError(f"{argument} {out_dir!r} is a file, not a folder")
    return out_dir


def _load_tinyft(ckpt_path):
    """(checkpoint.Checkpoint, GPTConfig) of a tinyft checkpoint, or InterchangeError."""
    try:
        ckpt = checkpoint.load(ckpt_path)
    except checkpoint.CheckpointError as e:
        raise InterchangeError(f"cannot export: {e}") from None
    if ckpt.meta.get("model_class") != "GPT" or not isinstance(ckpt.config, dict):
        raise InterchangeError(f"{ckpt_path!r} holds a {ckpt.meta.get('model_class')!r}, not a GPT with its config; "
                               "only GPT checkpoints can be exported")
    finetuned = ckpt.meta.get("finetune") if isinstance(ckpt.meta.get("finetune"), dict) else {}
    if finetuned.get("export") == "adapter":
        raise InterchangeError(f"{ckpt_path!r} holds LoRA adapters only; save the fine-tuned model with export="
                               "'merged' (the adapters folded into the weights) and export that")
    if finetuned.get("head_untied"):
        raise InterchangeError(f"{ckpt_path!r} was fine-tuned with an untied head (lm_head no longer equals wte); "
                               "nanoGPT's GPT ties them, so this model cannot be exported to it")
    try:
        config = GPTConfig.from_dict(ckpt.config)
    except ValueError as e:
        raise InterchangeError(f"{ckpt_path!r}: its config is not a valid GPTConfig ({e})") from None
    return ckpt, config


def char_vocabulary(tokenizer):
    """tinyft tokenizer dict -> nanoGPT's meta.pkl dict {"vocab_size", "itos", "stoi"}, or None for BPE.

    tinyft's id 0 is <unk>, written as "\\ufffd"; ids 1.. are the characters. import reads that back exactly.
    """
    if not isinstance(tokenizer, dict) or tokenizer.get("type") != "char":
        return None
    itos = {0: UNKNOWN_CHAR, **{i + 1: ch for i, ch in enumerate(tokenizer["chars"])}}
    stoi = {ch: i for i, ch in itos.items()}
    return {"vocab_size": len(itos), "itos": itos, "stoi": stoi}


def _nanogpt_train_config(ckpt, config, dataset, out_dir):
    """The `config` entry nanoGPT's train.py saves (its settings by name), filled from tinyft's run where known."""
    run = ckpt.meta.get("pretrain_config") or {}
    steps = int(run.get("steps", ckpt.meta.get("step") or 0) or 0)
    groups = (ckpt.optimizer_state or {}).get("param_groups") or [{}]
    beta1, beta2 = groups[0].get("betas", (0.9, 0.95))
    settings = {"out_dir": os.path.basename(os.path.abspath(out_dir)), "init_from": "resume", "dataset": dataset,
                "batch_size": run.get("batch_size", 12), "block_size": config.block_size, "n_layer": config.n_layer,
                "n_head": config.n_head, "n_embd": config.n_embd, "dropout": config.dropout, "bias": config.bias,
                "learning_rate": run.get("lr", 6e-4), "max_iters": steps, "lr_decay_iters": steps,
                "min_lr": run.get("min_lr", 6e-5), "warmup_iters": run.get("warmup_steps", 0),
                "weight_decay": run.get("weight_decay", 0.1), "beta1": float(beta1), "beta2": float(beta2),
                "grad_clip": run.get("grad_clip", 1.0), "gradient_accumulation_steps": 1,
                "gelu": config.gelu, "exported_by": "tinyft"}
    return {k: v for k, v in settings.items() if isinstance(v, (int, float, bool, str))}


# The train.py settings to pass on nanoGPT's command line to go on as tinyft's run did (train.py reads model
# sizes from the checkpoint, but batches, the schedule and block_size from its own settings).
NANOGPT_FLAGS = ("init_from", "out_dir", "dataset", "block_size", "batch_size", "gradient_accumulation_steps",
                 "dropout", "learning_rate", "min_lr", "warmup_iters", "lr_decay_iters", "max_iters", "weight_decay",
                 "beta1", "beta2", "grad_clip")


def _best_val_loss(meta):
    losses = [row["val_loss"] for row in meta.get("history") or [] if isinstance(row, dict)
              and isinstance(row.get("val_loss"), (int, float))]
    return float(min(losses)) if losses else 1e9  # 1e9: what nanoGPT's train.py starts from


def export_nanogpt(ckpt_path, out_dir, dataset="tinyft", overwrite=False):
    """Write a tinyft GPT checkpoint as nanoGPT's out_dir: ckpt.pt (+ meta.pkl for a character vocabulary).

    ckpt.pt holds what nanoGPT's train.py saves: model (its state_dict), optimizer (AdamW's state_dict over
    nanoGPT's two param groups), model_args, iter_num, best_val_loss, config. meta.pkl holds the character
    vocabulary that nanoGPT's sample.py reads from data/<dataset>/meta.pkl. tinyft_tokenizer.json keeps tinyft's
    tokenizer exactly (also BPE) for import. Needs PyTorch. Returns a summary dict: files, notes, nanogpt_flags.
    """
    ckpt_path = _check_input_file(ckpt_path, "ckpt_path")
    out_dir = _make_out_dir(out_dir, "out_dir")
    if not isinstance(dataset, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", dataset) or dataset in (".", ".."):
        raise InterchangeError(f"dataset must be a plain folder name (letters, digits, _ . -), got {dataset!r}")
    torch = _require_torch("export to nanoGPT's ckpt.pt")
    ckpt, config = _load_tinyft(ckpt_path)
    tokenizer = ckpt.meta.get("tokenizer")
    vocabulary = char_vocabulary(tokenizer)
    outputs = {NANOGPT_CHECKPOINT: os.path.join(out_dir, NANOGPT_CHECKPOINT)}
    if tokenizer is not None:
        outputs[TOKENIZER_JSON] = os.path.join(out_dir, TOKENIZER_JSON)
    if vocabulary is not None:
        outputs[NANOGPT_META] = os.path.join(out_dir, NANOGPT_META)
    _check_out_dir_files(out_dir, list(outputs.values()), [ckpt_path], overwrite)

    notes = []
    if (warning := gelu_warning(config)) is not None:
        _note(notes, warning)
    state = to_nanogpt_state(ckpt.model_state, config)
    optimizer = optimizer_to_nanogpt(ckpt.optimizer_state, config, notes)
    if tokenizer is None:
        _note(notes, "the checkpoint holds no tokenizer: nanoGPT's sample.py will fall back to GPT-2's encoding")
    elif vocabulary is None:
        _note(notes, "the tokenizer is tinyft's byte-level BPE, which nanoGPT's sample.py cannot read (it would use "
                     f"GPT-2's encoding); encode and decode with tinyft's tokenizer ({TOKENIZER_JSON})")

    tensors = {}  # one torch tensor per array object, so the tied pair stays ONE shared tensor
    model = {}
    for name, array in state.items():
        if id(array) not in tensors:
            tensors[id(array)] = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        model[name] = tensors[id(array)]
    payload = {"model": model, "model_args": model_args_from_config(config),
               "iter_num": int(ckpt.meta.get("step") or 0), "best_val_loss": _best_val_loss(ckpt.meta),
               "config": _nanogpt_train_config(ckpt, config, dataset, out_dir)}
    payload["optimizer"] = _torch_optimizer_state(torch, optimizer) if optimizer else _torch_optimizer_state(
        torch, _empty_nanogpt_optimizer(config, ckpt))

    os.makedirs(out_dir, exist_ok=True)
    _atomic_write_bytes(outputs[NANOGPT_CHECKPOINT], [_torch_bytes(torch, payload)])
    if tokenizer is not None:
        _atomic_write_bytes(outputs[TOKENIZER_JSON], [json.dumps(tokenizer).encode("utf-8")])
    if vocabulary is not None:  # writing a pickle of plain data is safe; only loading one can run code
        _atomic_write_bytes(outputs[NANOGPT_META], [pickle.dumps(vocabulary, protocol=4)])
    flags = " ".join(f"--{key}={payload['config'][key]}" for key in NANOGPT_FLAGS)
    return {"files": list(outputs.values()), "iter_num": payload["iter_num"], "model_args": payload["model_args"],
            "gelu": config.gelu, "notes": notes, "nanogpt_flags": flags}


def _empty_nanogpt_optimizer(config, ckpt):
    """AdamW state with no moments yet: nanoGPT's train.py can still load_state_dict it when resuming."""
    decay, no_decay = nanogpt_param_groups(config)
    run = ckpt.meta.get("pretrain_config") or {}
    settings = {"lr": float(run.get("lr", 6e-4)), "betas": (0.9, 0.95), "eps": 1e-8}
    return {"state": {}, "param_groups": [
        {**settings, "weight_decay": float(run.get("weight_decay", 0.1)), "params": list(range(len(decay)))},
        {**settings, "weight_decay": 0.0, "params": list(range(len(decay), len(decay) + len(no_decay)))}]}


def _torch_optimizer_state(torch, optimizer):
    """Our NumPy AdamW state -> torch's state_dict: tensors, and every group key the installed torch's AdamW has."""
    defaults = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]).state_dict()["param_groups"][0]
    groups = [{**{k: v for k, v in defaults.items() if k != "params"}, **group} for group in optimizer["param_groups"]]
    state = {index: {"step": torch.tensor(entry["step"], dtype=torch.float32),  # torch keeps step as a float tensor
                     "exp_avg": torch.from_numpy(np.array(entry["exp_avg"], copy=True)),
                     "exp_avg_sq": torch.from_numpy(np.array(entry["exp_avg_sq"], copy=True))}
             for index, entry in optimizer["state"].items()}
    return {"state": state, "param_groups": groups}


def _torch_bytes(torch, payload):
    import io

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def export_safetensors(ckpt_path, out_path, overwrite=False):
    """Write a tinyft GPT checkpoint's weights as one .safetensors file (Hugging Face's format, no PyTorch).

    Names are nanoGPT's; the tied matrix is stored once, as transformer.wte.weight (lm_head.weight is the same,
    as Hugging Face stores GPT-2). __metadata__ holds "format": "pt", nanoGPT's model_args, tinyft's config and
    tokenizer (JSON strings), so import_checkpoint rebuilds the model exactly. Returns a summary dict.
    """
    ckpt_path = _check_input_file(ckpt_path, "ckpt_path")
    if not isinstance(out_path, (str, os.PathLike)):
        raise InterchangeError(f"out_path must be a path, got {type(out_path).__name__}")
    out_path = os.fspath(out_path)
    if os.path.isdir(out_path):
        raise InterchangeError(f"out_path {out_path!r} is a folder; give a file name such as model.safetensors")
    _check_output_file(out_path, [ckpt_path], overwrite, "out_path")
    ckpt, config = _load_tinyft(ckpt_path)
    notes = []
    if (warning := gelu_warning(config)) is not None:
        _note(notes, warning)
    state = to_nanogpt_state(ckpt.model_state, config)
    tensors = {name: np.asarray(array, dtype=np.float32) for name, array in state.items() if name != "lm_head.weight"}
    metadata = {"format": "pt", "model_args": json.dumps(model_args_from_config(config)), "gelu": config.gelu,
                "tinyft_config": json.dumps(config.to_dict()), "step": str(int(ckpt.meta.get("step") or 0))}
    if ckpt.meta.get("tokenizer") is not None:
        metadata["tokenizer"] = json.dumps(ckpt.meta["tokenizer"])
    write_safetensors(out_path, tensors, metadata)
    return {"files": [out_path], "tensors": len(tensors), "gelu": config.gelu, "notes": notes}


# --- import ------------------------------------------------------------------------------------------------------


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numbers only: any class or function in the pickle is refused.

    A pickle can name any importable callable and have it called on load (that is how it rebuilds objects),
    so a meta.pkl from the internet could run code. Plain containers need no such call, so refusing every
    find_class leaves exactly the harmless part of the format.
    """

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it refers to {module}.{name}; tinyft reads only plain dicts, lists, strings "
                                     "and integers from a meta.pkl (loading classes could run code)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds persistent references; tinyft reads only plain data from a meta.pkl")


def read_meta_pkl(path):
    """nanoGPT's meta.pkl -> its dict, read with _PlainDataUnpickler and checked to be a character vocabulary."""
    path = _check_input_file(path, "vocab")
    if os.path.getsize(path) > META_PKL_MAX_BYTES:
        raise InterchangeError(f"{path!r} is larger than {META_PKL_MAX_BYTES} bytes: not a vocabulary")
    with open(path, "rb") as f:
        try:
            meta = _PlainDataUnpickler(f).load()
        except Exception as e:  # a damaged pickle can raise almost anything; all of it means "unreadable"
            raise InterchangeError(f"{path!r} cannot be read as nanoGPT's meta.pkl: {e}") from None
    _check_plain(meta, path)
    if not isinstance(meta, dict) or not isinstance(meta.get("itos"), dict) or not isinstance(meta.get("stoi"), dict):
        raise InterchangeError(f"{path!r}: expected nanoGPT's meta.pkl, a dict with 'itos', 'stoi' and 'vocab_size'")
    itos, V = meta["itos"], meta.get("vocab_size", len(meta["itos"]))
    if sorted(itos) != list(range(len(itos))) or V != len(itos):
        raise InterchangeError(f"{path!r}: itos must map every id 0..vocab_size-1 to its text (vocab_size {V}, "
                               f"{len(itos)} ids)")
    bad = [i for i, s in itos.items() if not isinstance(s, str) or len(s) != 1]
    if bad:
        raise InterchangeError(f"{path!r}: id {bad[0]} stands for {itos[bad[0]]!r}, not one character: only "
                               "character-level vocabularies can be imported (a BPE needs its merges)")
    if len(set(itos.values())) != len(itos):
        raise InterchangeError(f"{path!r}: itos holds a character twice")
    return meta


def _check_plain(value, path, depth=0):
    if depth > 20:
        raise InterchangeError(f"{path!r}: nested too deeply for a vocabulary")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, path, depth + 1)
            _check_plain(v, path, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_plain(v, path, depth + 1)
    elif not isinstance(value, (str, int)):
        raise InterchangeError(f"{path!r} holds a {type(value).__name__}; a meta.pkl vocabulary holds only dicts, "
                               "lists, strings and integers")


def tokenizer_from_vocabulary(meta):
    """nanoGPT's {"itos", ...} -> (tinyft char tokenizer dict, shift): shift is 0 when itos[0] is tinyft's <unk>
    (a vocabulary tinyft exported), else 1: every id moves up by one to make room for <unk> at id 0."""
    itos = meta["itos"]
    if itos[0] == UNKNOWN_CHAR:
        return {"type": "char", "chars": [itos[i] for i in range(1, len(itos))], "unk": "<unk>"}, 0
    return {"type": "char", "chars": [itos[i] for i in range(len(itos))], "unk": "<unk>"}, 1


def _tensor_to_numpy(name, value, torch):
    """A torch tensor -> (np.ndarray, dtype name); bfloat16 through its raw bits (NumPy has no bfloat16)."""
    if not isinstance(value, torch.Tensor):
        raise InterchangeError(f"entry {name} is a {type(value).__name__}, expected a tensor")
    value = value.detach().cpu().contiguous()
    if value.dtype == torch.bfloat16:
        return bfloat16_bits_to_float32(value.view(torch.int16).numpy().view(np.uint16)), "bfloat16"
    if not value.dtype.is_floating_point:
        return value.numpy(), str(value.dtype).replace("torch.", "")
    try:
        return value.numpy(), str(value.dtype).replace("torch.", "")
    except TypeError as e:  # float8 and other types NumPy lacks
        raise InterchangeError(f"entry {name} has dtype {value.dtype}, which tinyft cannot read ({e})") from None


def _read_nanogpt_pt(path, notes):
    """A nanoGPT ckpt.pt -> (state {name: array}, dtypes, model_args or None, optimizer or None, iter_num, config)."""
    torch = _require_torch(f"reading the PyTorch checkpoint {path!r}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only: no code runs
    except Exception as e:  # torch raises many types (UnpicklingError, RuntimeError, ...): all mean "cannot read"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InterchangeError(f"{path!r} cannot be read as a PyTorch checkpoint with weights_only=True: "
                               f"{type(e).__name__}: {first}") from None
    if not isinstance(ckpt, dict):
        raise InterchangeError(f"{path!r} holds a {type(ckpt).__name__}, expected a dict (nanoGPT's checkpoint or a "
                               "state_dict)")
    raw = ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt  # nested (train.py) or a bare state_dict
    state, dtypes = {}, {}
    for key, value in raw.items():
        state[key], dtypes[key] = _tensor_to_numpy(key, value, torch)
    optimizer = None
    if isinstance(ckpt.get("optimizer"), dict):
        optimizer = _tensors_to_numpy(ckpt["optimizer"], torch)
    run_config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    return state, dtypes, ckpt.get("model_args"), optimizer, int(ckpt.get("iter_num") or 0), run_config


def _tensors_to_numpy(value, torch):
    if isinstance(value, torch.Tensor):
        return _tensor_to_numpy("optimizer state", value, torch)[0]
    if isinstance(value, dict):
        return {k: _tensors_to_numpy(v, torch) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_tensors_to_numpy(v, torch) for v in value)
    return value


def _find_vocabulary(path, vocab, run_config, metadata):
    """(tokenizer dict, shift, where it came from) or None: the vocab argument, then files beside `path`, then
    nanoGPT's data/<dataset>/meta.pkl next to the checkpoint's folder, then the safetensors metadata."""
    if vocab is not None:
        if isinstance(vocab, dict):
            if vocab.get("type") not in ("char", "bpe"):
                raise InterchangeError("vocab: a dict must be a tinyft tokenizer's to_dict() (type 'char' or 'bpe')")
            return vocab, 0, "the vocab argument"
        vocab = _check_input_file(vocab, "vocab")
        if vocab.endswith(".json"):
            return _read_tokenizer_json(vocab), 0, vocab
        return (*tokenizer_from_vocabulary(read_meta_pkl(vocab)), vocab)
    folder = os.path.dirname(os.path.abspath(path))
    beside_json = os.path.join(folder, TOKENIZER_JSON)
    if os.path.isfile(beside_json):
        return _read_tokenizer_json(beside_json), 0, beside_json
    candidates = [os.path.join(folder, NANOGPT_META)]
    dataset = run_config.get("dataset")
    if isinstance(dataset, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", dataset):
        candidates.append(os.path.join(folder, os.pardir, "data", dataset, NANOGPT_META))  # nanoGPT/out -> nanoGPT/data
    for candidate in candidates:
        if os.path.isfile(candidate):
            return (*tokenizer_from_vocabulary(read_meta_pkl(candidate)), os.path.normpath(candidate))
    if "tokenizer" in metadata:
        try:
            return json.loads(metadata["tokenizer"]), 0, "the file's metadata"
        except ValueError:
            raise InterchangeError(f"{path!r}: the metadata's tokenizer is not JSON") from None
    return None


def _read_tokenizer_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            tokenizer = json.load(f)
    except (OSError, ValueError) as e:
        raise InterchangeError(f"cannot read the tokenizer {path!r}: {e}") from None
    if not isinstance(tokenizer, dict) or tokenizer.get("type") not in ("char", "bpe"):
        raise InterchangeError(f"{path!r} is not a tinyft tokenizer (a JSON object with type 'char' or 'bpe')")
    return tokenizer


def _tokenizer_size(tokenizer):
    if tokenizer.get("type") == "char":
        chars = tokenizer.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars) \
                or len(set(chars)) != len(chars):
            raise InterchangeError("the character tokenizer's chars must be distinct single characters")
        return len(chars) + 1
    merges = tokenizer.get("merges")
    if not isinstance(merges, list):
        raise InterchangeError("the BPE tokenizer has no list of merges")
    return 256 + len(merges)


def _insert_unk_row(array):
    """(V, C) -> (V + 1, C): a zero row in front for <unk> (logit 0 everywhere; every other row keeps its id + 1)."""
    return np.concatenate([np.zeros((1,) + array.shape[1:], dtype=array.dtype), array], axis=0)


def import_checkpoint(path, out_dir, vocab=None, n_head=None, gelu=None, overwrite=False):
    """Read a nanoGPT ckpt.pt or a .safetensors file and write a tinyft checkpoint (out_dir/ckpt.npz).

    path      nanoGPT's ckpt.pt (model, model_args, optimizer, iter_num; needs PyTorch) or a .safetensors file
    vocab     the vocabulary, if it is not found beside `path`: nanoGPT's meta.pkl (character-level), a tinyft
              tokenizer .json, or a tokenizer dict. finetune needs one, so without it import refuses
    n_head    only for a safetensors file without model_args in its metadata (no shape shows the head count)
    gelu      override the GELU (default: what the file says, else "exact", nanoGPT's)
    The result loads with checkpoint.load_model and `finetune --from`; AdamW moments come along when present.
    Returns a summary dict: checkpoint, config, step, notes.
    """
    path = _check_input_file(path, "path")
    out_dir = _make_out_dir(out_dir, "out_dir")
    out_path = os.path.join(out_dir, TINYFT_CHECKPOINT)
    if gelu is not None and gelu not in GELU_KINDS:
        raise InterchangeError(f"gelu must be None or one of {', '.join(map(repr, GELU_KINDS))}, got {gelu!r}")
    if n_head is not None and (isinstance(n_head, bool) or not isinstance(n_head, int) or n_head < 1):
        raise InterchangeError(f"n_head must be None or a positive int, got {n_head!r}")
    _check_out_dir_files(out_dir, [out_path], [path], overwrite)
    if _is_tinyft_checkpoint(path):
        raise InterchangeError(f"{path!r} is already a tinyft checkpoint; load it with checkpoint.load_model")

    notes, casts = [], []
    is_safetensors = path.endswith(".safetensors")
    if is_safetensors:
        state, metadata, dtypes = read_safetensors(path)
        model_args = _json_field(metadata, "model_args", path)
        tinyft_config = _json_field(metadata, "tinyft_config", path)
        optimizer, step, run_config = None, int(metadata.get("step", "0") or 0), {}
        file_gelu = (tinyft_config or {}).get("gelu") or metadata.get("gelu")
    else:
        state, dtypes, model_args, optimizer, step, run_config = _read_nanogpt_pt(path, notes)
        metadata, tinyft_config = {}, None
        file_gelu = run_config.get("gelu")  # set when tinyft exported it; nanoGPT's own runs are exact
    pairs, done = clean_nanogpt_state({key: (array, dtypes[key]) for key, array in state.items()})
    notes.extend(done)
    state = {name: as_float32(name, array, dtype, casts) for name, (array, dtype) in pairs.items()}
    gelu = gelu or (file_gelu if file_gelu in GELU_KINDS else "exact")

    if tinyft_config is not None:
        try:
            config = GPTConfig.from_dict({**tinyft_config, "gelu": gelu})
        except ValueError as e:
            raise InterchangeError(f"{path!r}: metadata tinyft_config is not a valid GPTConfig ({e})") from None
    elif model_args is not None:
        config = config_from_model_args(model_args, gelu=gelu)
    else:
        config = infer_config(state, n_head, gelu=gelu)
    state = from_nanogpt_state(state, config)
    by_name, settings = optimizer_from_nanogpt(optimizer, config, notes) if optimizer is not None else (None, None)

    found = _find_vocabulary(path, vocab, run_config, metadata)
    if found is None:
        raise InterchangeError(f"{path!r}: no vocabulary found (no {TOKENIZER_JSON} or {NANOGPT_META} beside it, "
                               "none in the file); tinyft's finetune needs one: pass vocab=PATH to nanoGPT's "
                               f"data/<dataset>/{NANOGPT_META} (character-level) or to a tinyft tokenizer .json")
    tokenizer, shift, source = found
    size = _tokenizer_size(tokenizer)
    if size - shift != config.vocab_size:
        raise InterchangeError(f"the vocabulary from {source} has {size - shift} ids but the model's embedding has "
                               f"{config.vocab_size} rows; they must be the same vocabulary")
    if shift:
        _note(notes, f"nanoGPT's vocabulary ({source}) has no <unk>; tinyft keeps id 0 for it, so every id moves up "
                     "by one and wte gains a zero row 0 (the <unk> logit is 0 at every position: the other logits "
                     "are unchanged, their probabilities shrink slightly until fine-tuning trains that row)")
        config = GPTConfig.from_dict({**config.to_dict(), "vocab_size": config.vocab_size + 1})
        state = {**state, "transformer.wte.weight": _insert_unk_row(state["transformer.wte.weight"])}
        state["lm_head.weight"] = state["transformer.wte.weight"]
        if by_name and "transformer.wte.weight" in by_name:
            entry = by_name["transformer.wte.weight"]
            by_name["transformer.wte.weight"] = {**entry, "m": _insert_unk_row(entry["m"]),
                                                 "v": _insert_unk_row(entry["v"])}
    if casts:
        _note(notes, _cast_note(casts))
    if not is_safetensors and file_gelu is None and gelu == "exact":
        notes.append("GELU: exact (nanoGPT's nn.GELU()), so tinyft computes the same function")

    os.makedirs(out_dir, exist_ok=True)
    rng_state = get_rng_state()
    try:
        model = GPT(config)  # building draws initial weights; put tinyft's random stream back afterwards
    finally:
        set_rng_state(rng_state)
    model.load_state_dict(state)
    optimizer_obj = build_tinyft_adamw(model, by_name, settings) if by_name is not None else None
    checkpoint.save(out_path, model, optimizer_obj, step=step, tokenizer=tokenizer, kind="import",
                    imported_from=os.path.abspath(path), import_notes=notes)
    return {"checkpoint": out_path, "config": config.to_dict(), "step": step, "tokenizer_from": source,
            "optimizer": optimizer_obj is not None, "notes": notes}


def _is_tinyft_checkpoint(path):
    """True for a tinyft .npz (a zip holding __meta__.npy); torch.save's zips hold archive/data.pkl instead."""
    try:
        with zipfile.ZipFile(path) as zf:
            return checkpoint.META_ENTRY + ".npy" in zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _json_field(metadata, key, path):
    if key not in metadata:
        return None
    try:
        value = json.loads(metadata[key])
    except ValueError:
        raise InterchangeError(f"{path!r}: metadata {key} is not JSON") from None
    if not isinstance(value, dict):
        raise InterchangeError(f"{path!r}: metadata {key} must be a JSON object")
    return value
