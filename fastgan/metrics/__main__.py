"""python -m fastgan.metrics: train (or load) a dataset's classifier and print its test accuracy."""

import argparse
import sys

from fastgan._argtypes import EXIT_USAGE, output
from fastgan._options import DATASETS
from fastgan.data import DatasetError
from fastgan.metrics.classifier import get_classifier


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastgan.metrics", description=__doc__)
    p.add_argument("--dataset", default="mnist-5k", choices=DATASETS, help="mnist-5k (default), mnist or fashion-mnist")
    p.add_argument("--data-dir", help="IDX files of mnist / fashion-mnist")
    p.add_argument(
        "--cache-dir", type=output(folder=True), help="classifier cache (default $FASTGAN_CACHE or ~/.cache/fastgan)"
    )
    a = p.parse_args(argv)
    try:
        _, info = get_classifier(a.dataset, a.data_dir, a.cache_dir)
    except DatasetError as exc:  # before any training: a missing folder, files, a --data-dir for mnist-5k
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"{a.dataset}: test accuracy {info['test_accuracy']:.2%} "
        f"({'cached' if info['cached'] else 'trained'}; training took {info['train_seconds']:.0f} s) "
        f"{info['path'] or '(not saved)'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
