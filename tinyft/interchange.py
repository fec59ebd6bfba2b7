"""Interchange: move a tinyft checkpoint to nanoGPT (PyTorch) or safetensors, and bring one back.

Map of this file:
  1. Names and shapes   nanoGPT's state_dict names in its order; to_nanogpt_state / from_nanogpt_state (strip
                        "_orig_mod.", drop attn.bias buffers, one tied lm_head / wte matrix); model_args <-> GPTConfig
  2. Number formats     float16 and bfloat16 -> float32 (a bfloat16 is the top 16 bits of a float32)
  3. The optimizer      tinyft's AdamW state <-> nanoGPT's two param groups (decay: dim >= 2; no decay: the rest)
  4. safetensors        write_safetensors / read_safetensors in NumPy: 8-byte length, JSON header, raw bytes
All of it is pure NumPy on dicts of arrays (tests need no PyTorch); the files (export_nanogpt,
export_safetensors, import_checkpoint) are in export.py. Formats after nanoGPT's model.py and
train.py (Karpathy) and Hugging Face's safetensors. docs/outgrow.md shows the way out and back.
"""

import json
import math
import os
import re
import tempfile
import warnings

import numpy as np

from . import optim
from .nn import GPTConfig


class InterchangeError(ValueError):
    """A file or argument cannot be converted: the message names the file, the entry and what was expected."""


class InterchangeWarning(UserWarning):
    """Something that converts but does not carry over exactly (a GELU that differs, a dtype cast, ...)."""


def _note(notes, text):
    """Record a note for the returned summary and issue it as an InterchangeWarning."""
    notes.append(text)
    warnings.warn(text, InterchangeWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------------
# 1. Names and shapes (tinyft's parameter names ARE nanoGPT's: the mapping checks, orders and cleans)
# ----------------------------------------------------------------------------------------------------

TIED = ("transformer.wte.weight", "lm_head.weight")  # one (V, C) matrix under two names, in both frameworks
COMPILED_PREFIX = "_orig_mod."  # torch.compile wraps the model; nanoGPT saves the wrapper's names by default
BUFFER_PATTERN = re.compile(r"transformer\.h\.\d+\.attn\.(bias|masked_bias)$")  # causal masks, not weights
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")  # nanoGPT's GPTConfig


def parameter_shapes(config):
    """{name: shape} of every parameter, each once, in named_parameters() order (nanoGPT's and tinyft's).

    The tied matrix comes once, as transformer.wte.weight; lm_head.weight is the same array.
    """
    V, T, C = config.vocab_size, config.block_size, config.n_embd
    vec = ("weight", "bias") if config.bias else ("weight",)
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (T, C)}
    for i in range(config.n_layer):
        h = f"transformer.h.{i}"
        for module, (n_out, n_in) in (("ln_1", (C, None)), ("attn.c_attn", (3 * C, C)), ("attn.c_proj", (C, C)),
                                      ("ln_2", (C, None)), ("mlp.c_fc", (4 * C, C)), ("mlp.c_proj", (C, 4 * C))):
            for kind in vec:
                shapes[f"{h}.{module}.{kind}"] = (n_out, n_in) if kind == "weight" and n_in else (n_out,)
    for kind in vec:
        shapes[f"transformer.ln_f.{kind}"] = (C,)
    return shapes


def state_dict_shapes(config):
    """{name: shape} of a state_dict: the parameters, then lm_head.weight (the tied matrix's second name)."""
    return {**parameter_shapes(config), "lm_head.weight": (config.vocab_size, config.n_embd)}


def _check_names_and_shapes(state, expected, where):
    """Raise InterchangeError listing every missing, extra and misshapen entry of `state` (name -> array)."""
    problems = [f"missing {name} (expected shape {shape})" for name, shape in expected.items() if name not in state]
    problems += [f"unexpected {name} (not a parameter of this GPT)" for name in state if name not in expected]
    problems += [f"{name} has shape {tuple(np.shape(state[name]))}, expected {expected[name]}"
                 for name in expected if name in state and tuple(np.shape(state[name])) != expected[name]]
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        lora = any("lora" in name for name in state if name not in expected)
        hint = "; LoRA layers: save the fine-tuned model with export='merged' and export that" if lora else ""
        raise InterchangeError(f"{where}: the weights do not fit the GPT their config describes: "
                               + "; ".join(problems[:10]) + more + hint)


def to_nanogpt_state(state, config):
    """tinyft state_dict -> nanoGPT's model state_dict: the same names, nanoGPT's order, float arrays.

    Both tied names are kept, holding ONE array object (nanoGPT's state_dict lists the shared tensor twice).
    """
    _check_names_and_shapes(state, state_dict_shapes(config), "to_nanogpt_state")
    wte, lm_head = (np.asarray(state[name]) for name in TIED)
    if not np.array_equal(wte, lm_head):
        raise InterchangeError("to_nanogpt_state: transformer.wte.weight and lm_head.weight differ, but they are one "
                               "tied matrix in nanoGPT's GPT")
    out = {name: np.asarray(state[name]) for name in parameter_shapes(config)}
    out["lm_head.weight"] = out["transformer.wte.weight"]  # the same object: the tie
    return out


def clean_nanogpt_state(state):
    """Strip torch.compile's "_orig_mod." prefix and drop the attention-mask buffers (attn.bias, attn.masked_bias).

    Returns (cleaned dict, list of what was done, for the notes). Two keys that become one name are an error.
    """
    cleaned, done, stripped, dropped = {}, [], 0, []
    for key, value in state.items():
        if not isinstance(key, str):
            raise InterchangeError(f"the state_dict has a key {key!r} that is not a string")
        name = key
        while name.startswith(COMPILED_PREFIX):
            name = name[len(COMPILED_PREFIX):]
        if BUFFER_PATTERN.match(name):
            dropped.append(name)
            continue
        stripped += name != key
        if name in cleaned:
            raise InterchangeError(f"the state_dict holds {name} twice (once with the {COMPILED_PREFIX!r} prefix)")
        cleaned[name] = value
    if stripped:
        done.append(f"stripped the {COMPILED_PREFIX!r} prefix (a torch.compile'd model) from {stripped} names")
    if dropped:
        done.append(f"dropped {len(dropped)} attention-mask buffers ({dropped[0]}, ...): a mask, not weights")
    return cleaned, done


def from_nanogpt_state(state, config):
    """nanoGPT's model state_dict (already cleaned, float arrays) -> tinyft state_dict for GPT(config).

    lm_head.weight may be absent (safetensors stores the tied matrix once, as transformer.wte.weight); if both
    names are present they must hold equal values, since tinyft's GPT ties them.
    """
    state = dict(state)
    if "lm_head.weight" not in state and "transformer.wte.weight" in state:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    if "transformer.wte.weight" not in state and "lm_head.weight" in state:
        state["transformer.wte.weight"] = state["lm_head.weight"]
    _check_names_and_shapes(state, state_dict_shapes(config), "from_nanogpt_state")
    if not np.array_equal(state["transformer.wte.weight"], state["lm_head.weight"]):
        raise InterchangeError("from_nanogpt_state: lm_head.weight differs from transformer.wte.weight; tinyft's "
                               "GPT (like nanoGPT's) ties them, so an untied model cannot be imported")
    out = {name: state[name] for name in parameter_shapes(config)}
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def model_args_from_config(config):
    """GPTConfig -> nanoGPT's model_args dict (exactly nanoGPT's GPTConfig fields: no gelu, which it has not)."""
    return {name: getattr(config, name) for name in MODEL_ARGS}


def config_from_model_args(model_args, gelu="exact"):
    """nanoGPT's model_args -> GPTConfig. nanoGPT's MLP always runs the exact GELU, hence the default."""
    if not isinstance(model_args, dict):
        raise InterchangeError(f"model_args must be a dict, got {type(model_args).__name__}")
    unknown = sorted(set(model_args) - set(MODEL_ARGS))
    if unknown:
        raise InterchangeError(f"model_args has settings tinyft's GPT does not have: {', '.join(unknown)} "
                               f"(nanoGPT's are {', '.join(MODEL_ARGS)}); was the model changed?")
    missing = [name for name in MODEL_ARGS if name not in model_args and name != "dropout"]
    if missing:
        raise InterchangeError(f"model_args lacks {', '.join(missing)}")
    try:
        return GPTConfig(**model_args, gelu=gelu)
    except ValueError as e:
        raise InterchangeError(f"model_args {model_args} do not make a valid GPT: {e}") from None


def infer_config(state, n_head, gelu="exact", dropout=0.0):
    """A GPTConfig read off a cleaned state_dict's shapes. n_head is the one size no shape shows: pass it."""
    if "transformer.wte.weight" not in state or "transformer.wpe.weight" not in state:
        raise InterchangeError("cannot infer the GPT's sizes: transformer.wte.weight and transformer.wpe.weight are "
                               "needed (is this a nanoGPT / GPT-2 state_dict?)")
    if n_head is None:
        raise InterchangeError("the number of attention heads cannot be read from the weights' shapes and the file "
                               "does not say it: pass n_head")
    V, C = np.shape(state["transformer.wte.weight"])
    T = np.shape(state["transformer.wpe.weight"])[0]
    layers = {int(m.group(1)) for m in (re.match(r"transformer\.h\.(\d+)\.", name) for name in state) if m}
    try:
        return GPTConfig(vocab_size=V, block_size=T, n_layer=len(layers), n_head=n_head, n_embd=C,
                         dropout=dropout, bias="transformer.ln_f.bias" in state, gelu=gelu)
    except ValueError as e:
        raise InterchangeError(f"the weights' shapes give no valid GPT: {e}") from None


def gelu_warning(config):
    """The note for a model whose GELU is not nanoGPT's, or None."""
    if config.gelu == "exact":
        return None
    return ("this model uses GPT-2's tanh GELU but nanoGPT's model.py always runs the exact GELU (nn.GELU()): "
            "in nanoGPT its logits will differ (measured: 1e-3 after 200 steps of the default model, up to 2e-2 "
            "after 2,000; docs/transformer.md). "
            "For identical logits pretrain with gelu=\"exact\" (--gelu exact)")


# ----------------------------------------------------------------------------------------------------
# 2. Number formats
# ----------------------------------------------------------------------------------------------------


def bfloat16_bits_to_float32(bits):
    """bfloat16 values given as their raw 16 bits (uint16) -> float32, exactly.

    bfloat16 is float32 with the low 16 mantissa bits cut off (same sign, same 8 exponent bits), so putting the
    16 bits back on top of 16 zero bits gives the very same number as a float32: no rounding, no PyTorch.
    """
    bits = np.asarray(bits)
    if bits.dtype not in (np.uint16, np.int16):
        raise InterchangeError(f"bfloat16 bits must be a uint16 array, got {bits.dtype}")
    return (bits.view(np.uint16).astype(np.uint32) << 16).view(np.float32)  # same shape


def float32_to_bfloat16_bits(x):
    """float32 -> bfloat16 raw bits, rounded to nearest even (the inverse, for tests and writers)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # add half an ulp (ties to even), cut the low 16 bits
    return rounded.astype(np.uint16)


def as_float32(name, array, stored_dtype, notes):
    """A float array as tinyft's GPT holds it (float32), with a note when the stored type was another float."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise InterchangeError(f"{name} holds {stored_dtype} values, expected floats")
    if stored_dtype not in ("float32", "F32"):  # (bfloat16 arrives already widened to float32)
        notes.append((name, stored_dtype))
    return array.astype(np.float32)


def _cast_note(casts):
    """One sentence about every (name, dtype) that was cast to float32."""
    by_dtype = {}
    for name, dtype in casts:
        by_dtype.setdefault(dtype, []).append(name)
    parts = []
    for dtype, names in by_dtype.items():
        how = ("exactly (every float16 is a float32)" if dtype in ("float16", "F16") else
               "exactly (a bfloat16's bits are the top half of a float32)" if dtype in ("bfloat16", "BF16") else
               "rounding to nearest (tinyft's GPT computes in float32)")
        parts.append(f"{len(names)} {dtype} arrays ({names[0]}, ...) cast to float32 {how}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------------------
# 3. The optimizer: AdamW moments move between the two frameworks' parameter groups
# ----------------------------------------------------------------------------------------------------
# nanoGPT's configure_optimizers: group 0 = every parameter with dim >= 2 (weights AND embeddings) with
# weight_decay, group 1 = the rest (biases, LayerNorm) with 0; both in named_parameters() order; torch numbers
# the parameters across groups (group 0's first). tinyft's param_groups_for_weight_decay leaves the embeddings
# undecayed, so tinyft's groups and indices differ: we match every state entry by parameter NAME.


def nanogpt_param_groups(config):
    """(decay names, no-decay names) in the order nanoGPT's configure_optimizers builds its two groups."""
    shapes = parameter_shapes(config)
    decay = [name for name, shape in shapes.items() if len(shape) >= 2]
    no_decay = [name for name, shape in shapes.items() if len(shape) < 2]
    return decay, no_decay


def _tinyft_state_by_name(optimizer_state, config):
    """{name: {"step", "m", "v"}} and the groups' settings from a tinyft optimizer state_dict."""
    groups = optimizer_state["param_groups"]
    names_by_index = {}
    if all("names" in g for g in groups):
        for g in groups:
            names_by_index.update(zip(g["params"], g["names"]))
    elif len(groups) == 1:  # one unnamed group over model.parameters(), in their order
        names = list(parameter_shapes(config))
        if len(groups[0]["params"]) != len(names):
            raise InterchangeError(f"the optimizer's one group holds {len(groups[0]['params'])} parameters, the GPT "
                                   f"has {len(names)}; the state cannot be matched to names")
        names_by_index.update(zip(groups[0]["params"], names))
    else:
        raise InterchangeError("the optimizer has several param groups without 'names', so its state cannot be "
                               "matched to parameters")
    shapes = parameter_shapes(config)
    by_name = {}
    for index, entry in optimizer_state["state"].items():
        name = names_by_index.get(int(index))
        if name not in shapes:
            raise InterchangeError(f"optimizer state entry {index} belongs to {name!r}, not a parameter of this GPT")
        by_name[name] = entry
    return by_name, groups


def optimizer_to_nanogpt(optimizer_state, config, notes):
    """tinyft optimizer state_dict -> torch.optim.AdamW's state_dict layout for nanoGPT (NumPy arrays, plain
    numbers; PyTorch tensors are made at write time). Returns None when there is nothing to carry (then nanoGPT
    starts its moments at zero, as it does for a new run), with a note saying why."""
    if optimizer_state is None:
        _note(notes, "the checkpoint holds no optimizer state: nanoGPT's AdamW will start its moments from zero")
        return None
    cls = optimizer_state.get("class")
    if cls not in ("AdamW", "Adam"):
        _note(notes, f"the checkpoint's optimizer is {cls}, whose state has no AdamW moments: nanoGPT's AdamW will "
                     "start them from zero")
        return None
    by_name, groups = _tinyft_state_by_name(optimizer_state, config)
    first = groups[0]
    for g in groups[1:]:
        if list(g["betas"]) != list(first["betas"]) or g["eps"] != first["eps"]:
            raise InterchangeError("the optimizer's param groups use different betas or eps; nanoGPT's AdamW has "
                                   "one setting for all")
    weight_decay = max(float(g["weight_decay"]) for g in groups)
    if cls == "Adam" and weight_decay > 0:
        _note(notes, "the checkpoint's optimizer is Adam with L2 weight decay; nanoGPT's AdamW decays decoupled "
                     "(the moments carry over; the decay acts differently from now on)")
    decay, no_decay = nanogpt_param_groups(config)
    tinyft_decayed = {n for g in groups if float(g["weight_decay"]) > 0 for n in g.get("names", [])}
    newly_decayed = [n for n in decay if tinyft_decayed and n not in tinyft_decayed]
    if newly_decayed:
        _note(notes, f"nanoGPT decays every 2-D parameter, tinyft did not decay {', '.join(newly_decayed)}: in "
                     f"nanoGPT they get weight_decay={weight_decay} from now on")

    state = {}
    for index, name in enumerate(decay + no_decay):  # torch numbers parameters across its groups in order
        entry = by_name.get(name)
        if entry is None:
            continue  # never stepped (frozen in tinyft): torch creates the state on its first step, as we did
        state[index] = {"step": float(int(np.asarray(entry["step"]))),
                        "exp_avg": np.asarray(entry["m"], dtype=np.float32),
                        "exp_avg_sq": np.asarray(entry["v"], dtype=np.float32)}
    settings = {"lr": float(first["lr"]), "betas": tuple(float(b) for b in first["betas"]), "eps": float(first["eps"])}
    return {"state": state,
            "param_groups": [{**settings, "weight_decay": weight_decay, "params": list(range(len(decay)))},
                             {**settings, "weight_decay": 0.0,
                              "params": list(range(len(decay), len(decay) + len(no_decay)))}]}


def optimizer_from_nanogpt(torch_state, config, notes):
    """nanoGPT's AdamW state_dict (tensors already NumPy arrays) -> ({name: {"step", "m", "v"}}, settings).

    Every entry is checked: two groups whose sizes are nanoGPT's, moments shaped like their parameters, one
    integer step each. settings = lr, betas, eps and the decay group's weight_decay.
    """
    if not isinstance(torch_state, dict) or not isinstance(torch_state.get("param_groups"), list) \
            or not isinstance(torch_state.get("state"), dict):
        raise InterchangeError("the optimizer entry must be a torch optimizer state_dict (a dict with 'state' and "
                               "'param_groups')")
    decay, no_decay = nanogpt_param_groups(config)
    groups = torch_state["param_groups"]
    sizes = [len(g.get("params", [])) for g in groups]
    if sizes != [len(decay), len(no_decay)]:
        raise InterchangeError(f"the optimizer's param groups hold {sizes} parameters; nanoGPT's configure_optimizers "
                               f"makes [{len(decay)}, {len(no_decay)}] for this GPT (decay: dim >= 2, then the rest)")
    if any(g.get("amsgrad") for g in groups):
        raise InterchangeError("the optimizer used amsgrad=True, which tinyft's AdamW does not have")
    names = {index: name for group, group_names in zip(groups, (decay, no_decay))
             for index, name in zip(group["params"], group_names)}
    shapes = parameter_shapes(config)
    by_name, casts = {}, []
    for index, entry in torch_state["state"].items():
        name = names.get(index)
        if name is None:
            raise InterchangeError(f"optimizer state entry {index!r} is not in any param group")
        if not isinstance(entry, dict) or not {"step", "exp_avg", "exp_avg_sq"} <= set(entry):
            raise InterchangeError(f"optimizer state of {name}: expected step, exp_avg and exp_avg_sq, "
                                   f"got {sorted(entry) if isinstance(entry, dict) else type(entry).__name__}")
        step = np.asarray(entry["step"])
        if step.shape not in ((), (1,)) or step.dtype.kind not in "iuf" or not float(step.reshape(-1)[0]).is_integer() \
                or float(step.reshape(-1)[0]) < 0:
            raise InterchangeError(f"optimizer state of {name}: step must be one whole number, got {entry['step']!r}")
        step = float(step.reshape(-1)[0])
        moments = {}
        for key, ours in (("exp_avg", "m"), ("exp_avg_sq", "v")):
            array = np.asarray(entry[key])
            if array.shape != shapes[name]:
                raise InterchangeError(f"optimizer state of {name}: {key} has shape {array.shape}, the parameter "
                                       f"has {shapes[name]}")
            moments[ours] = as_float32(f"optimizer {name}.{key}", array, str(array.dtype), casts)
        by_name[name] = {"step": int(step), **moments}
    if casts:
        _note(notes, "optimizer moments: " + _cast_note(casts))
    first = groups[0]
    try:
        settings = {"lr": float(first.get("lr", 1e-3)), "eps": float(first.get("eps", 1e-8)),
                    "betas": tuple(float(b) for b in first.get("betas", (0.9, 0.999))),
                    "weight_decay": float(first.get("weight_decay", 0.0))}
    except (TypeError, ValueError) as e:
        raise InterchangeError(f"the optimizer's first param group has unreadable settings ({e})") from None
    if len(settings["betas"]) != 2:
        raise InterchangeError(f"the optimizer's betas must be two numbers, got {settings['betas']}")
    return by_name, settings


def build_tinyft_adamw(model, by_name, settings):
    """A tinyft AdamW over tinyft's own groups (param_groups_for_weight_decay) holding the given moments."""
    optimizer = optim.AdamW(optim.param_groups_for_weight_decay(model, settings["weight_decay"]), lr=settings["lr"],
                            betas=settings["betas"], eps=settings["eps"])
    sd = optimizer.state_dict()
    index_of = {name: i for g in sd["param_groups"] for i, name in zip(g["params"], g["names"])}
    sd["state"] = {index_of[name]: {"step": np.array(entry["step"], dtype=np.int64), "m": entry["m"], "v": entry["v"]}
                   for name, entry in by_name.items()}
    optimizer.load_state_dict(sd)
    return optimizer


# ----------------------------------------------------------------------------------------------------
# 4. safetensors, in NumPy: [8-byte little-endian header length N][N bytes of JSON][the tensors' raw bytes]
# ----------------------------------------------------------------------------------------------------
# The JSON maps each name to {"dtype", "shape", "data_offsets": [begin, end]} (byte offsets into the data that
# follows the header, which the tensors must cover exactly, without gaps or overlaps), plus an optional
# "__metadata__" of string -> string. Bytes are little-endian, C order.

SAFETENSORS_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "I16": np.int16,
                      "F16": np.float16, "U32": np.uint32, "I32": np.int32, "F32": np.float32, "U64": np.uint64,
                      "I64": np.int64, "F64": np.float64, "BF16": np.uint16}  # BF16: read as raw bits, then widened
SAFETENSORS_NAMES = {np.dtype(t).newbyteorder("<"): name for name, t in SAFETENSORS_DTYPES.items() if name != "BF16"}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors package's own limit


class SafetensorsError(InterchangeError):
    """A .safetensors file is malformed: the message names the file and the entry."""


def write_safetensors(path, tensors, metadata=None):
    """Write {name: np.ndarray} (and {str: str} metadata) to `path` as safetensors, atomically.

    Tensors are stored in the order given, each right after the previous one; the header is padded with spaces
    to a multiple of 8 bytes so that every tensor's data starts 8-byte aligned (as the safetensors package does).
    """
    header, chunks, offset = {}, [], 0
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in metadata.items()):
            raise SafetensorsError("write_safetensors: metadata must map strings to strings")
        header["__metadata__"] = metadata
    for name, array in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise SafetensorsError(f"write_safetensors: tensor name {name!r} must be a string other than __metadata__")
        array = np.asarray(array)
        little = array.dtype.newbyteorder("<")
        if little not in SAFETENSORS_NAMES:
            raise SafetensorsError(f"write_safetensors: {name} has dtype {array.dtype}, which safetensors cannot "
                                   f"store (stored: {', '.join(sorted(SAFETENSORS_DTYPES))})")
        data = np.ascontiguousarray(array, dtype=little).tobytes()
        header[name] = {"dtype": SAFETENSORS_NAMES[little], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    _atomic_write_bytes(path, [len(text).to_bytes(8, "little"), text, *chunks])


def read_safetensors(path):
    """Read and validate a safetensors file: (tensors {name: np.ndarray}, metadata {str: str}, dtypes {name: str}).

    BF16 tensors come back as float32 (exact, see bfloat16_bits_to_float32); dtypes says what was stored. Every
    problem raises SafetensorsError naming the file and the entry: short or truncated file, a header that is not
    a JSON object, unknown dtype names, bad shapes, offsets out of range, overlapping or leaving gaps.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise SafetensorsError(f"cannot read {path!r}: {e.strerror or e}") from None
    if len(blob) < 8:
        raise SafetensorsError(f"{path!r} is not a safetensors file: {len(blob)} bytes, shorter than the 8-byte "
                               "header length")
    n = int.from_bytes(blob[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > len(blob):
        raise SafetensorsError(f"{path!r}: the header length says {n} bytes but the file has {len(blob) - 8} after "
                               "it: truncated, or not a safetensors file")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError(f"{path!r}: the header is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict) or not blob[8:9] == b"{":
        raise SafetensorsError(f"{path!r}: the header must be a JSON object")
    data = memoryview(blob)[8 + n:]

    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{path!r}: __metadata__ must map strings to strings")
    spans, tensors, dtypes = [], {}, {}
    for name, info in header.items():
        where = f"{path!r}: tensor {name}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: expected exactly dtype, shape and data_offsets, got {info!r}"[:300])
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise SafetensorsError(f"{where}: unknown dtype {dtype!r} (known: {', '.join(sorted(SAFETENSORS_DTYPES))})")
        if not isinstance(shape, list) or not all(_is_count(s) for s in shape):
            raise SafetensorsError(f"{where}: shape must be a list of integers >= 0, got {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            raise SafetensorsError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, "
                                   f"got {offsets!r}")
        begin, end = offsets
        if end > len(data):
            raise SafetensorsError(f"{where}: data_offsets {offsets} run past the end of the data ({len(data)} "
                                   "bytes): the file is truncated or the offsets are wrong")
        itemsize = np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize
        if end - begin != math.prod(shape) * itemsize:
            raise SafetensorsError(f"{where}: {end - begin} bytes for shape {shape} of {dtype}, which needs "
                                   f"{math.prod(shape) * itemsize}")
        spans.append((begin, end, name))
        array = np.frombuffer(data[begin:end], dtype=np.dtype(SAFETENSORS_DTYPES[dtype]).newbyteorder("<"))
        array = array.reshape(shape).astype(np.dtype(SAFETENSORS_DTYPES[dtype]), copy=True)  # native order, owned
        tensors[name] = bfloat16_bits_to_float32(array) if dtype == "BF16" else array
        dtypes[name] = dtype
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else f"leaves a gap of {begin - position} bytes"
            raise SafetensorsError(f"{path!r}: tensor {name} starts at byte {begin}, which {what} (the data must be "
                                   "covered exactly once)")
        position = end
    if position != len(data):
        raise SafetensorsError(f"{path!r}: {len(data) - position} bytes after the last tensor belong to none")
    return tensors, dict(metadata), dtypes


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"the name(s) {', '.join(twice)} appear twice")
    return dict(pairs)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _atomic_write_bytes(path, parts):
    """Write the byte strings to a temp file in path's folder, fsync, then rename over path (never half a file)."""
    folder, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
