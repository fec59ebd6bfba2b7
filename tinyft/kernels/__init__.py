"""Hot paths: each Numba kernel beside the NumPy twin it is tested against, forward and backward.

Map of this package:
  _backend.py        the switch use("numba" | "numpy") / current(), the cached njit decorator, and the
                     process settings made at import (listed at its head; TINYFT_NO_PROCESS_SETTINGS=1 skips them);
                     thread_settings() (recorded in checkpoints), first_run_notice() (cold compile cache)
  _math.py           vectorizable tanh and exp for float32 kernels
  layernorm.py       fused layer norm                  gelu.py           fused tanh-GELU
  cross_entropy.py   one-pass softmax cross-entropy    attention.py      fused causal attention
  embedding.py       scatter-add embedding backward    matmul.py         tiled / batched matmul (teaching)
  adamw.py           fused AdamW update (for tinyft.optim)
Plain arrays in, plain arrays out: tinyft/functional.py wraps these in Functions. docs/kernels.md explains
each kernel, the measurements behind it and how to read Numba's parallel diagnostics.
"""

from . import adamw, attention, cross_entropy, embedding, gelu, layernorm, matmul
from ._backend import BACKENDS, cache_is_cold, current, first_run_notice, thread_settings, use

__all__ = ["BACKENDS", "cache_is_cold", "current", "first_run_notice", "thread_settings", "use", "adamw", "attention", "cross_entropy", "embedding", "gelu",
           "layernorm", "matmul"]
