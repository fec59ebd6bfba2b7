"""loops: what pretraining's and fine-tuning's loops share, so each loop reads as its own steps.

Map of this file:
  check_out_dir, write_history    the output folder (made at the first save) and the history as JSON lines
  progress_bar                    tqdm with loss, lr and tokens/s; sparse (a tenth of the steps) when stderr
                                  is not a terminal, so a log is not filled with progress lines
  deferred_interrupt              Ctrl-C held while an update and its history row happen (both or neither)
  quiet_float_warnings            NumPy's overflow warnings off inside a loop: the NaN/inf check names the step
  far_above_warning               the warning for a run that ends far above where it started
"""

import json
import math
import os
import signal
import sys
import threading
import warnings

from tqdm.auto import tqdm

from . import checkpoint


def write_history(path, history):
    """history (a list of dicts) as JSON lines, written atomically (checkpoint.atomic_write)."""
    checkpoint.atomic_write(path, "".join(json.dumps(row) + "\n" for row in history))


def check_out_dir(out):
    """Create the output folder, or raise a ValueError that names it and says what to do.

    The loops call checkpoint.check_output_folder (which creates nothing) before any work, and this when
    they first write, so a refused run leaves no empty folder behind."""
    checkpoint.check_output_folder(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {out!r}: cannot create the folder ({err.strerror}); choose a writable folder") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out {out!r} is not writable; choose a folder you can write to")


def _stderr_is_interactive():
    if "notebook" in " ".join(c.__module__ for c in tqdm.__mro__):
        return True  # a notebook's progress widget redraws in place: no log to flood
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress_bar(total, desc, enabled=True, initial=0):
    """The loops' tqdm bar. In a terminal (or a notebook) it redraws in place as usual. When standard error
    is a file or a pipe (CI, nohup, `2> log`) every redraw becomes a line of the log, so the bar then draws
    at a fixed sparse cadence: about ten lines per run (every tenth of the steps), whatever the speed.
    Loops pass their postfix with refresh=False, so it shows at the next drawing instead of forcing one."""
    if not enabled:
        return tqdm(total=total, initial=initial, disable=True)
    if _stderr_is_interactive():
        return tqdm(total=total, initial=initial, desc=desc, unit="step")
    return tqdm(total=total, initial=initial, desc=desc, unit="step", miniters=max(1, total // 10), mininterval=0,
                maxinterval=float("inf"))


class deferred_interrupt:
    """Context manager: a Ctrl-C (SIGINT) that arrives inside the block is held and raised at its end.

    The loops put the optimizer update and its bookkeeping (the step counter, the history row) inside, so a
    Ctrl-C never leaves half the weights updated or a step done but not counted: it lands before the update
    (the step is redone on resume) or after the row (the step is kept). Only the main thread can catch
    signals; elsewhere, or when the program set its own SIGINT handler, it does nothing."""

    def __enter__(self):
        self.pending, self.previous = False, None
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum, frame):
        self.pending = True

    def __exit__(self, exc_type, exc, tb):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.pending and exc_type is None:
            raise KeyboardInterrupt
        return False


class quiet_float_warnings:
    """Context manager: hides NumPy's "overflow / invalid value / divide by zero encountered" RuntimeWarnings,
    in every thread (the kernels' helper threads too). The loops use it: check_step_finite then reports the
    first NaN or inf once, naming its step, instead of a screen of warnings that name none."""

    def __enter__(self):
        self.catcher = warnings.catch_warnings()
        self.catcher.__enter__()
        warnings.filterwarnings("ignore", r".*(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
        return self

    def __exit__(self, *exc):
        self.catcher.__exit__(*exc)
        return False


FAR_ABOVE_NATS = 1.0  # a run that ends this far above where it started has gone wrong (the lr, mostly)


def far_above_warning(final, start, unigram=None, lr=None):
    """A warning (str) when a run ended far above its starting loss or twice its unigram baseline, else None."""
    if not (math.isfinite(final) and math.isfinite(start)):
        return None
    worse_than_start = final > start + FAR_ABOVE_NATS
    worse_than_unigram = unigram is not None and final > 2 * unigram
    if not (worse_than_start or worse_than_unigram):
        return None
    baseline = f" and the unigram baseline {unigram:.3f}" if unigram is not None else ""
    hint = f"; the learning rate ({lr:g}) is probably too high" if lr is not None else ""
    return (f"warning: the run ended at loss {final:.3f} nats/token, far above where it started ({start:.3f})"
            f"{baseline}{hint}")
