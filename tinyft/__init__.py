"""tinyft: learn how fine-tuning works by building every piece from scratch in NumPy.

Layers, bottom up (imports only point down): the engine (autograd.py), differentiable ops
(functional.py, kernels/), models (nn.py, optim.py, checkpoint.py, interchange.py and export.py: to and
from nanoGPT and safetensors), data (data.py, tokenizers.py, passages.py, tasks.py, own_data.py),
workflows (loops.py, pretrain.py, lora.py, classifier.py, finetune.py, forgetting.py, baselines.py,
experiments.py, claims.py, demo.py), the command line (cli.py). gradcheck.py checks any gradient against
finite differences.
"""

from . import checkpoint, functional, nn, optim
from .autograd import (
    Function,
    Tensor,
    concatenate,
    default_rng,
    get_rng_state,
    is_grad_enabled,
    manual_seed,
    no_grad,
    rng_preserved,
    set_rng_state,
    split,
    stack,
    tensor,
)
from .checkpoint import CheckpointError
from .gradcheck import GradcheckError, gradcheck
from .nn import GPT, GPTConfig, Module, Parameter
from .optim import SGD, Adam, AdamW, clip_grad_norm

__all__ = [
    "Tensor", "Function", "tensor", "concatenate", "stack", "split", "no_grad", "is_grad_enabled",
    "manual_seed", "default_rng", "get_rng_state", "set_rng_state", "rng_preserved", "gradcheck", "GradcheckError",
    "GPT", "GPTConfig", "Module", "Parameter", "SGD", "Adam", "AdamW", "clip_grad_norm", "CheckpointError",
    "functional", "nn", "optim", "checkpoint",
]
__version__ = "0.1.0"
