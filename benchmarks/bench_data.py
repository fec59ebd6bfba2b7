"""How long the data steps of docs/data.md take: building the corpus, training the BPE, measuring overlap.

Map of this script:
  corpus        broad_corpus() built from scratch (the module cache emptied first): the first build in the
                process (which imports the documented modules), then rebuilds
  bpe           BPETokenizer.train to 512 ids on the first 200 KB of the code corpus, then on the whole
                broad corpus
  overlap       validation_overlap(train, val, window=32) on the broad corpus in character ids (default split)
Each figure is the median of --repeats runs, in seconds. Usage: python benchmarks/bench_data.py [--repeats 3]
"""

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_step import cpu_model  # noqa: E402
from tinyft import data  # noqa: E402
from tinyft.tokenizers import BPETokenizer, CharTokenizer  # noqa: E402


def seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, "
          f"{platform.python_implementation()} {platform.python_version()}, {platform.system()}")

    def build_broad():
        data._CACHE.pop("broad", None)  # the module keeps the corpus once built: start from nothing
        return data.broad_corpus()

    first = seconds(build_broad, 1)  # imports the 142 documented modules on the way
    print(f"broad_corpus(), first build in this process:       {first:6.2f} s")
    print(f"broad_corpus() rebuilt (modules already imported): {seconds(build_broad, args.repeats):6.2f} s")
    broad, code = data.load_corpus("broad"), data.load_corpus("stdlib_code")
    code_200k = code[:200_000]
    bpe_code = seconds(lambda: BPETokenizer.train(code_200k, vocab_size=512), args.repeats)
    print(f"BPETokenizer.train, 512 ids, 200 KB of code:       {bpe_code:6.2f} s")
    bpe_broad = seconds(lambda: BPETokenizer.train(broad, vocab_size=512), args.repeats)
    print(f"BPETokenizer.train, 512 ids, the broad corpus:     {bpe_broad:6.2f} s")
    ids = CharTokenizer.build([broad, code]).encode(broad)
    train, val = data.train_val_split(ids)
    overlap = seconds(lambda: data.validation_overlap(train, val, window=32), args.repeats)
    print(f"validation_overlap, broad corpus, char ids:        {overlap:6.2f} s")


if __name__ == "__main__":
    main()
