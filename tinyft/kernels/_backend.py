"""The kernel switch ("numba" | "numpy"), the one `njit` decorator every kernel file uses, and the
process settings that keep a training step fast on a small machine.

Map of this file:
  threads and memory     the process settings below; keep_freed_memory() is the malloc one
  use(name), current()   pick the path the fused Functions run; use() also works as a context manager
  run_parallel(tasks, blas=True), parallel_chunks(work, n, chunk, blas=True)   run tasks (or work(start,
                         stop) over chunks of range(n)) on threads, one per core, BLAS held to one thread
                         meanwhile: how the step's matrix products use both cores (kernels/matmul.py,
                         kernels/attention.py); blas=False for tasks that call no BLAS
  parallel_rows(work, n, grain)   the same for the row kernels (layer norm, GELU, cross-entropy): a few
                         blocks of rows per thread, each one call of a serial nogil loop
  njit(parallel=...)     numba.njit with cache=True, safe fast-math flags, error_model="numpy" (no
                         ZeroDivisionError check, which would keep loops from vectorizing), and a warned
                         fallback to no cache when the cache folder (NUMBA_CACHE_DIR, else __pycache__) is
                         not writable
The default backend is "numba", or the environment variable TINYFT_KERNELS when it is set.

PROCESS SETTINGS made when tinyft is imported (TINYFT_NO_PROCESS_SETTINGS=1 skips all three):
  OMP_WAIT_POLICY=PASSIVE   an environment variable (child processes inherit it): idle OpenMP threads sleep
                            at once instead of spinning. Off: set OMP_WAIT_POLICY yourself (kept as it is).
  Numba threading layer     "workqueue", Numba's own pool, which sleeps between loops. Off: set
                            NUMBA_THREADING_LAYER (omp, tbb, ...) and Numba's choice stands.
  glibc malloc thresholds   mallopt: M_MMAP_THRESHOLD 32 MB, M_TRIM_THRESHOLD 1 GB, so freed temporaries
                            are reused instead of returned to the system (MEMORY_KEPT says whether it took
                            effect). Off: TINYFT_KEEP_MEMORY=0.
docs/kernels.md ("Process settings") gives the measurements behind each.
"""

import ctypes
import ctypes.util
import functools
import inspect
import os
import queue
import sys
import tempfile
import threading
import warnings

# TINYFT_NO_PROCESS_SETTINGS=1: leave OpenMP, Numba's threading layer and malloc as the process has them.
PROCESS_SETTINGS = os.environ.get("TINYFT_NO_PROCESS_SETTINGS", "").strip() != "1"

# One threaded library at a time. A training step used to alternate BLAS calls (OpenBLAS's threads) with
# Numba prange kernels (Numba's OpenMP threads). By default an OpenMP thread spins for a while after its
# loop ends, holding a core that the next BLAS call needs: on 2 cores that made the GPT step 2-4x slower
# (`python benchmarks/bench_settings.py`, docs/kernels.md). PASSIVE makes idle OpenMP threads sleep at once.
# It must be set before libgomp starts, and a value the user chose is kept. The step's own kernels now all
# run on tinyft's threads (run_parallel below); this and the next setting serve the prange kernels kept for
# reading and any prange code of the user's.
if PROCESS_SETTINGS:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402

# Measured on 2 cores (`python benchmarks/bench_settings.py`): spinning OpenMP (ACTIVE, or libgomp's default)
# makes the step 2-4x slower than workqueue; OpenMP with PASSIVE comes close to workqueue but is less steady.
# Numba's own "workqueue" pool sleeps between loops and never competes with OpenBLAS, so it is the default
# here unless NUMBA_THREADING_LAYER says otherwise. Its one limit: do not launch parallel kernels from
# several Python threads at once (Numba stops with an error); set NUMBA_THREADING_LAYER=omp for that.
if PROCESS_SETTINGS and "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"



def keep_freed_memory(max_block=32 * 1024 * 1024):
    """Let freed arrays of up to `max_block` bytes stay in the process heap for the next allocation.

    A training step allocates the same few-MB temporaries every time (scores (B, H, T, T), MLP
    activations, logits). By default glibc serves each allocation above its mmap threshold with fresh
    pages from the kernel and hands them back on free, so every step pays a page fault and a zeroing
    for every 4 KB of them: measured on 2 cores, 13-36% of the GPT step (`python benchmarks/bench_settings.py`,
    the TINYFT_KEEP_MEMORY=0 row). mallopt raises the threshold to max_block (glibc's
    ceiling is 32 MB) and stops trimming the heap, so freed blocks are reused. The price: memory a
    process has freed is not returned to the system until it exits. Linux/glibc only; elsewhere, or
    with TINYFT_KEEP_MEMORY=0 or TINYFT_NO_PROCESS_SETTINGS=1, it does nothing. Returns True when the
    setting took effect.
    """
    keep = PROCESS_SETTINGS and os.environ.get("TINYFT_KEEP_MEMORY", "1") != "0"
    if not keep or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(max_block)) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False


MEMORY_KEPT = keep_freed_memory()

BACKENDS = ("numba", "numpy")

# Fast-math without "nnan" and "ninf": those two let LLVM assume no NaN or inf ever occurs, which would
# break any -inf masking and hide NaNs from the tests. "reassoc" lets reductions vectorize; "contract"
# allows fused multiply-add; "afn" allows approximate math functions; "arcp" a*(1/b) for a/b; "nsz" -0 == 0.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def _check(name):
    if name not in BACKENDS:
        raise ValueError(f"tinyft.kernels: unknown backend {name!r}; valid names are {', '.join(map(repr, BACKENDS))}")
    return name


_env = os.environ.get("TINYFT_KERNELS", "").strip()
try:
    _current = _check(_env) if _env else "numba"
except ValueError as err:
    raise ValueError(f"environment variable TINYFT_KERNELS={_env!r}: {err}") from None


def current():
    """The backend the fused Functions run now: "numba" or "numpy"."""
    return _current


class use:
    """Select a backend now; as a context manager, restore the previous one on exit.

    >>> tinyft.kernels.use("numpy")            # from here on, the NumPy twins run
    >>> with tinyft.kernels.use("numba"):      # inside: the Numba kernels; after: "numpy" again
    ...     loss.backward()
    """

    def __init__(self, name):
        global _current
        self.name = _check(name)
        self.previous = _current
        _current = name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _current
        _current = self.previous

    def __repr__(self):
        return f"tinyft.kernels.use({self.name!r})"


# --- tinyft's own threads for the step's matrix products ---------------------------------------------
# Two reasons not to leave the cores to BLAS's threads (measured, docs/kernels.md):
#  * after a call on two threads OpenBLAS's idle helper keeps polling for ~0.1 s, holding a core that the
#    next Numba kernel needs (attention fwd+bwd right after such a product: 8.4 ms instead of 4.4);
#  * attention multiplies 64 small (128 x 32) matrices per product; OpenBLAS splits each between its two
#    threads and gains nothing by itself (`python benchmarks/bench_overheads.py` measured 0.62/0.58 ms on
#    BLAS's two threads, 0.65/0.59 on one, 0.66/0.66 as two halves on our threads): the first reason is the
#    one that counts.
# So the products run here, each task one single-threaded BLAS call. np.matmul and our kernels compiled
# with nogil=True release the GIL, so the threads really run at once. Numba's prange cannot serve here:
# calling BLAS inside Numba needs SciPy, which tinyft does not require.

class _Batch:
    """One run_parallel call: its tasks, which ones are taken, how many are left, the first error."""

    def __init__(self, tasks):
        self.tasks, self.taken, self.left, self.error = tasks, 0, len(tasks), None
        self.lock, self.finished = threading.Lock(), threading.Event()

    def work(self):
        """Take the next task until none is left; whoever finishes the last task sets `finished`."""
        while True:
            with self.lock:
                if self.taken == len(self.tasks):
                    return
                task = self.tasks[self.taken]
                self.taken += 1
            error = None
            try:
                task()
            except BaseException as err:  # noqa: BLE001 - handed to the caller, which re-raises it
                error = err
            with self.lock:
                self.error = self.error or error
                self.left -= 1
                if self.left == 0:
                    self.finished.set()


class _Helpers:
    """Helper threads that sleep on an inbox until run_parallel posts a batch; one set per process."""

    def __init__(self):
        self.n, self.pid, self.inbox = 0, os.getpid(), queue.SimpleQueue()

    def grow(self, n):
        """Start threads until there are n."""
        for i in range(self.n, n):
            threading.Thread(target=self._serve, name=f"tinyft-kernels-{i}", daemon=True).start()
        self.n = max(self.n, n)

    def _serve(self):
        while True:
            self.inbox.get().work()


_helpers = None
_helpers_lock = threading.Lock()


def _get_helpers(n):
    """At least n helper threads (made on first use, and anew after a fork: threads do not survive it)."""
    global _helpers
    with _helpers_lock:
        if _helpers is None or _helpers.pid != os.getpid():
            _helpers = _Helpers()
        _helpers.grow(n)
        return _helpers


_blas = {"controllers": None}


def _blas_controllers():
    """threadpoolctl's handles on the BLAS libraries loaded in this process (found once)."""
    if _blas["controllers"] is None:
        from threadpoolctl import ThreadpoolController
        _blas["controllers"] = ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas["controllers"]


class one_blas_thread:
    """Context manager: every BLAS library runs single-threaded inside, as set before after.
    .ok is False when no BLAS library could be controlled (then callers should not add threads)."""

    def __enter__(self):
        self.saved = [(lib, lib.num_threads) for lib in _blas_controllers()]
        for lib, _ in self.saved:
            lib.set_num_threads(1)
        self.ok = bool(self.saved)
        return self

    def __exit__(self, *exc):
        for lib, n in self.saved:
            lib.set_num_threads(n)


def thread_count():
    """Threads run_parallel uses: Numba's (NUMBA_NUM_THREADS or numba.set_num_threads limit both)."""
    return numba.get_num_threads()


def thread_settings():
    """{"numba": Numba's thread count (tinyft's own threads follow it), "blas": the BLAS libraries' largest}.

    Checkpoints record it: a sum split over 2 threads may add in another order than on 1, so results can
    differ in their last digits across thread counts (each count alone is bit-reproducible)."""
    try:
        blas = max((lib.num_threads for lib in _blas_controllers()), default=None)
    except Exception:  # noqa: BLE001 - threadpoolctl could not inspect this process: record what we know
        blas = None
    return {"numba": thread_count(), "blas": blas}


def run_parallel(tasks, blas=True):
    """Run the callables in `tasks` on numba.get_num_threads() threads at once (the calling thread and
    sleeping helper threads it wakes), BLAS single-threaded meanwhile; each thread takes the next task
    until none is left, so a thread slowed by something else simply does fewer. Returns when all
    are done, then re-raises the first error (the outputs are then incomplete). Each task must write only
    its own outputs, so tasks cannot race. Called from any thread but the main one, or with one thread
    or one task, the tasks run in order in the calling thread, and the first error stops the rest; so do
    tasks that call BLAS (blas=True) when BLAS cannot be held to one thread (its own threads would then
    compete with ours). Pass blas=False for tasks that call no BLAS: they use the threads regardless."""
    helpers = min(thread_count(), len(tasks)) - 1
    if helpers > 0 and threading.current_thread() is threading.main_thread():
        with one_blas_thread() as held:
            if held.ok or not blas:
                batch = _Batch(tasks)
                inbox = _get_helpers(helpers).inbox
                for _ in range(helpers):
                    inbox.put(batch)
                batch.work()  # the calling thread works too, instead of waiting idle
                batch.finished.wait()  # for the tasks the helpers took
                if batch.error is not None:
                    raise batch.error
                return
    for task in tasks:
        task()


def parallel_chunks(work, n, chunk, blas=True):
    """run_parallel over work(start, stop) for range(n) cut into chunks of `chunk` (> 0)."""
    run_parallel([functools.partial(work, start, min(start + chunk, n)) for start in range(0, n, chunk)], blas)


TASKS_PER_THREAD = 2  # a thread slowed by something else then leaves its second chunk to the others


def parallel_rows(work, n, grain):
    """parallel_chunks over range(n) in TASKS_PER_THREAD chunks per thread, none smaller than `grain` rows
    (below that a hand-off costs more than the rows take): how the row kernels (layer norm, GELU,
    cross-entropy) share the cores. Each chunk is one call of a serial kernel compiled with nogil=True,
    which calls no BLAS."""
    parallel_chunks(work, n, max(grain, -(-n // (TASKS_PER_THREAD * thread_count()))), blas=False)


# --- compilation ------------------------------------------------------------------------------------

_warned_folders = set()


def cache_folder(source_file):
    """Where Numba writes its cache for functions defined in `source_file`."""
    if numba.config.CACHE_DIR:  # set from the environment variable NUMBA_CACHE_DIR
        return numba.config.CACHE_DIR
    return os.path.join(os.path.dirname(os.path.abspath(source_file)), "__pycache__")


def _writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder)
        os.close(handle)
        os.remove(probe)
        return True
    except OSError:
        return False


_KERNEL_MODULES = ("adamw", "attention", "cross_entropy", "embedding", "gelu", "layernorm", "matmul")
_notice = {"given": False}


def cache_is_cold():
    """True when the Numba backend will compile: its cache holds no index file (.nbi) of these kernels for
    this Python. A cheap look at one folder (the whole NUMBA_CACHE_DIR tree when that is set)."""
    if _current != "numba" or numba.config.DISABLE_JIT:
        return False
    tag = f".py{sys.version_info.major}{sys.version_info.minor}.nbi"
    here = os.path.dirname(os.path.abspath(__file__))
    roots = [numba.config.CACHE_DIR] if numba.config.CACHE_DIR else [os.path.join(here, "__pycache__")]
    for root in roots:
        for _, _, names in os.walk(root):
            if any(name.endswith(tag) and name.split(".", 1)[0] in _KERNEL_MODULES for name in names):
                return False
    return True


def first_run_notice():
    """'compiling kernels (first run only) ...' once per process when the cache is cold, else None."""
    if _notice["given"] or not cache_is_cold():
        return None
    _notice["given"] = True
    return "compiling kernels (first run only): the first step is slow while Numba compiles them into its cache"


def njit(parallel=False, **options):
    """Decorator: numba.njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=parallel, **options).

    error_model="numpy": a float division by zero gives inf or nan, as in NumPy, instead of raising Python's
    ZeroDivisionError. The check that raises it is a branch inside every loop that divides, and it keeps
    LLVM from vectorizing the loop (prange loops are compiled this way already; `python
    benchmarks/bench_vectorize.py` measures the difference, docs/kernels.md explains it).

    Compilation is lazy: a kernel compiles on its first call, once per argument types (float32 and
    float64 each get their own machine code), and the result is cached on disk for the next process.
    If the cache folder cannot be written, it warns once and compiles without cache (slower starts only).
    Under NUMBA_DISABLE_JIT=1 numba.njit returns the plain Python function and prange is range.
    """

    def decorate(func):
        folder = cache_folder(inspect.getsourcefile(func))
        cache = numba.config.DISABLE_JIT or _writable(folder)
        if not cache and folder not in _warned_folders:
            _warned_folders.add(folder)
            warnings.warn(f"tinyft.kernels: Numba cache folder {folder} is not writable, so kernels compile "
                          f"without a disk cache (every new process compiles again). Set NUMBA_CACHE_DIR to "
                          f"a writable folder to keep compiled kernels between runs.", RuntimeWarning, stacklevel=2)
        return numba.njit(cache=bool(cache), parallel=parallel, fastmath=set(FASTMATH), error_model="numpy",
                          **options)(func)

    return decorate
