#!/usr/bin/env bash
# The accelerator check of issue 19: throughput table up to R = 65 536, % of the fp32 peak, the CPU/GPU ratio of
# the same sweep, conv implementations and every sim's quick preset on the GPU, in <= 5 min; results under
# benchmarks/results/<device-name>/. Options: see `python -m benchmarks.gpu_check --help`
# (--skip-presets, --budget-s, --tiny or FA_JAX_GPU_CHECK_TINY=1 for a smoke test of the script).
set -u
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m benchmarks.gpu_check "$@"
