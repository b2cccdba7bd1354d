#!/usr/bin/env bash
# The GPU issue's whole check as one call on a lent GPU node, where nothing can be installed:
# what the machine holds, the accelerator tests (greedy parity with the CPU engine, grouped LoRA
# terms equal to gathered ones), then bench/gpu.py's figures. Logs and JSON land in $OUT.
#
#     bash bench/gpu_node.sh                          # on the node; extra arguments go to bench/gpu.py
#     PYTHON=/tmp/devsim/bin/python bash bench/gpu_node.sh --shapes tiny --streams 1,4   # a CPU rehearsal
#
# TESTS_TIMEOUT_S bounds the tests; DEADLINE_S is when bench/gpu.py starts no further part, so
# the call ends with time left on the lease to run it again.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
echo "results in $OUT"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    "$PYTHON" -c 'import sys, jax; print(sys.version.split()[0], "jax", jax.__version__, jax.devices())'
    "$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1
    nproc
} | tee "$OUT/machine.txt"
# -o addopts= drops the project's --durations and --strict-markers, which need nothing missing here
timeout "${TESTS_TIMEOUT_S:-180}" "$PYTHON" -m pytest -q -p no:cacheprovider -o addopts= -rs \
    workers/llm/tests/test_gpu.py workers/llm/tests/test_grouped_lora.py 2>&1 | tee "$OUT/tests.log"
tests=${PIPESTATUS[0]}
"$PYTHON" bench/gpu.py --skip-parity --deadline-s "${DEADLINE_S:-240}" --json "$OUT/gpu.json" "$@" 2>&1 \
    | tee "$OUT/gpu.log"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, bench exit $bench"
exit $((tests || bench))
