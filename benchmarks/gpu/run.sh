#!/usr/bin/env bash
# One lease on a lent GPU machine (see PERF_NOTES.md): the GPU-marked tests, the kernel
# variant experiment and the benchmark suite, logs under $OUT. Carry .whl (spikingjelly
# and loguru wheels, pure Python) with the call. Usage: benchmarks/gpu/run.sh [bench args]
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/neurogen-gpu}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, cupy, sys; print(sys.version); print('torch', torch.__version__, 'cupy', cupy.__version__)"
  g++ --version | head -1; nproc; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
[ -n "${SKIP_TESTS:-}" ] || timeout "${TEST_S:-200}" python3 -m pytest -q -m gpu -p no:cacheprovider \
    tests/test_gpu.py tests/test_compile.py > "$OUT/pytest.log" 2>&1
tail -5 "$OUT/pytest.log" 2>/dev/null
[ -n "${SKIP_VARIANTS:-}" ] || timeout "${VARIANTS_S:-120}" python3 benchmarks/gpu/variants.py \
    > "$OUT/variants.log" 2>&1
cat "$OUT/variants.log" 2>/dev/null | grep -v "Triton not available"
[ -n "${SKIP_NCU:-}" ] || timeout "${NCU_S:-90}" ncu --clock-control none --section SpeedOfLight \
    --section MemoryWorkloadAnalysis -k regex:ng_ -s 2 -c 2 python3 benchmarks/gpu/one_step.py \
    > "$OUT/ncu.log" 2>&1
grep -E "ng_|Throughput|Duration|Busy|Bandwidth" "$OUT/ncu.log" 2>/dev/null | head -40
[ -n "${SKIP_RECURRENT:-}" ] || timeout "${RECURRENT_S:-150}" python3 -m neurogen.bench --device cuda \
    --recurrent --batch 256 --H 256 512 1024 --out "$OUT/recurrent" > "$OUT/recurrent.log" 2>&1
grep -v "Triton not available\|WARNING\|^W1" "$OUT/recurrent.log" 2>/dev/null | tail -40
# issue 19: the branchy variants beside SpikingJelly's FlexSN of the same neurons (Triton)
[ -n "${SKIP_FLEXSN:-}" ] || timeout "${FLEXSN_S:-150}" python3 -m neurogen.bench --device cuda \
    --models LIFNode+refractory2 LIFNode+clamp --T 64 --N 65536 1048576 --dtypes float32 \
    --out "$OUT/flexsn" > "$OUT/flexsn.log" 2>&1
grep -v "Triton not available\|WARNING\|^W1" "$OUT/flexsn.log" 2>/dev/null | tail -30
timeout "${BENCH_S:-300}" python3 -m neurogen.bench --device cuda --out "$OUT/bench" "$@" \
    > "$OUT/bench.log" 2>&1
grep -v "Triton not available\|WARNING\|^W1" "$OUT/bench.log" | tail -80
