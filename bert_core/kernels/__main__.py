"""python -m bert_core.kernels: build (or find) and load the fused CPU kernel library, print its path.

Images run it at build time so that pods never compile; exit 1 with one line if it cannot be built."""

import sys

import tensorflow as tf

from bert_core import kernels


def main() -> int:
    try:
        kernels.load()  # loads too: an image must not ship a library its TensorFlow cannot open
        print(kernels.library_path())
    except (kernels.KernelBuildError, OSError, tf.errors.OpError) as e:
        print(f"bert: error: fused kernels: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
