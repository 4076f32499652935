#!/usr/bin/env bash
# ctest entry cuda_kernels: the [cuda] tests of ptq_kernel_tests on a CUDA device, or exit 77 (ctest: Skipped) with
# the reason when there is none. Usage: run_cuda_tests.sh PTQ_KERNEL_BENCH PTQ_KERNEL_TESTS
set -euo pipefail
bench=$1 tests=$2
rc=0
reason=$("$bench" --cuda-check) || rc=$?
if [[ $rc -eq 77 ]]; then
  echo "skipped: no CUDA device ($reason); the [cuda] tests of ptq_kernel_tests did not run"
  exit 77
elif [[ $rc -ne 0 ]]; then
  echo "ptq_kernel_bench --cuda-check failed ($rc): $reason" >&2
  exit "$rc"
fi
echo "CUDA device: $reason"
exec "$tests" "[cuda]"
