"""python -m bert_core.kernels: build (or find) the fused CPU kernel library and print its path.

Images run it at build time so that pods never compile; exit 1 with one line if it cannot be built."""

import sys

from bert_core import kernels


def main() -> int:
    try:
        print(kernels.build())
    except kernels.KernelBuildError as e:
        print(f"bert: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
