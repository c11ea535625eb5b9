#!/bin/sh
# Make an unpacked Horovod 0.28.1 source tree build against ROCm 6 (docker/Dockerfile.base).
#   sh docker/horovod_rocm6.sh SRC_DIR ROCM_PATH
# ROCm 6 moved two files Horovod 0.28.1 expects at their ROCm 5 places (ROCm/ROCm#4865,
# horovod/horovod#4292; the fix AMD suggests in ROCm/ROCm#3987; horovod PR #4044 is not merged):
# - FindHIP.cmake (and its FindHIP/ helpers): from hip/cmake to lib/cmake/hip. Horovod's
#   find_package(HIP) looks in its own cmake/Modules too, so they are copied there.
# - rccl.h: now rccl/rccl.h. horovod/common/ops/nccl_operations.h includes <rccl.h>.
# Stops with one line when the tree or ROCm is not what these two fixes are for.
set -eu
if [ "$#" -ne 2 ]; then
  echo "usage: horovod_rocm6.sh SRC_DIR ROCM_PATH" >&2
  exit 2
fi
src=$1
rocm=$2
hip_cmake="$rocm/lib/cmake/hip"
header="$src/horovod/common/ops/nccl_operations.h"
fail() { echo "horovod_rocm6.sh: $*" >&2; exit 1; }

[ -f "$hip_cmake/FindHIP.cmake" ] || fail "no $hip_cmake/FindHIP.cmake: not a ROCm 6 layout"
[ -f "$rocm/include/rccl/rccl.h" ] || fail "no $rocm/include/rccl/rccl.h: RCCL is missing from this ROCm"
[ -d "$src/cmake/Modules" ] || fail "no $src/cmake/Modules: not a Horovod source tree"
grep -q '^#include <rccl.h>$' "$header" || fail "$header does not include <rccl.h>: another Horovod version?"

cp -R "$hip_cmake"/FindHIP* "$src/cmake/Modules/"
sed -i 's|^#include <rccl.h>$|#include <rccl/rccl.h>|' "$header"
echo "horovod_rocm6.sh: $src builds against $rocm (FindHIP from $hip_cmake, <rccl/rccl.h>)"
