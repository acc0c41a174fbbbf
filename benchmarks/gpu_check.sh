#!/usr/bin/env bash
# The prepared device check (docs/benchmarks.md, "GPU decoding"): at most ~8 minutes on a
# lent GPU machine, run from the repository root through the device tool, e.g.
#
#     bash benchmarks/gpu_check.sh            # writes everything under $OUT (or results/gpu_check)
#
# The device has its own Python and torch build and no network. This script uses them as
# they are: the repository goes on PYTHONPATH (datasets/ as shiftbench_datasets through a
# symbolic link, the way the installed package names it); when modules the tests need are
# missing there and a folder of carried wheels exists ($WHEELS, default .whl: the lock's
# versions, for the device's Python), every wheel in it is unpacked into a folder put first
# on PYTHONPATH (no dependency resolution, no change to the device's own environment); else
# the missing modules are listed in env.txt and the steps that need them fail visibly.
# The wheels: `bash benchmarks/device_wheels.sh` (here, before the device call).
# Steps, each under its own time limit:
#   1. env.txt: nvidia-smi, python, torch/torchvision/CUDA, the versions that matter (~10 s)
#   2. benchmarks/gpu_decode.py: 10,000 JPEGs 500x375, resnet50 at 224 px, bf16,
#      channels_last: bare decode, bare forward, harness (GPU decode; GPU decode with
#      each batch's outputs waited for at once, the old per-batch .cpu(); CPU decode),
#      each harness mode twice, then one GPU-decode run under torch.profiler into
#      profile.txt (<= 240 s; 59 s on an H200 machine without the profiled run)
#   3. the test suite with the device's torch (not-slow tests, as `make test`; the browser
#      tests, tests/test_page.py, left out: no chromium there), $TEST_WORKERS processes;
#      interrupted at its limit so the results so far are still summarised (<= 340 s;
#      on an H200 machine 1,294 tests took 235 s)
# Benchmark before tests, so the figures come back even if the tests run long.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/results/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SHIM="$(mktemp -d)"
ln -s "$PWD/datasets" "$SHIM/shiftbench_datasets"
export PYTHONPATH="$PWD:$SHIM${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 OUTDATED_IGNORE=1 SHIFTBENCH_DIGEST_CACHE="$SHIM/digests.sqlite"
: > "$OUT/summary.txt"
status=0
step() {  # step NAME SECONDS CMD...: run with a time limit, record the outcome
    local name="$1" limit="$2"
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    echo "$name: rc=$rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
    [ "$rc" -eq 0 ] || status=1
    tail -n 25 "$OUT/$name.txt"
}

WHEELS="${WHEELS:-.whl}"
MODULES="torch torchvision timm hydra omegaconf pandas pyarrow sklearn scipy PIL matplotlib maze_dataset muutils torchmetrics tqdm pytest xdist submitit joblib wilds pytorch_ood open_clip faiss plotly mapie"
missing() {
    "$PY" - $MODULES <<'PYEOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
PYEOF
}
if [ -n "$(missing)" ] && [ -d "$WHEELS" ]; then
    SITE="$(mktemp -d)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl > "$OUT/wheels.txt" 2>&1 || echo "wheels: install failed" >> "$OUT/summary.txt"
    export PYTHONPATH="$SITE:$PYTHONPATH"
fi
step env 60 bash -c "nvidia-smi; '$PY' -c 'import sys, torch, torchvision; print(sys.version); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"-\"); \
print(\"torchvision\", torchvision.__version__)'; echo missing: \$('$PY' -c 'import importlib.util as u; \
print(\" \".join(m for m in \"$MODULES\".split() if u.find_spec(m) is None))'); \
'$PY' -c 'import importlib.metadata as md; \
print(\" \".join(n + \"==\" + md.version(n) for n in \"numpy pandas pyarrow timm hydra-core scikit-learn scipy pillow matplotlib pytest\".split()))'; \
nproc; free -g | head -2"

# Overridable for a smoke test of this script on a CPU machine:
#   DEVICE=cpu IMAGES=32 MODEL=test_resnet TESTS=tests/test_gpudecode.py bash benchmarks/gpu_check.sh
step bench 240 "$PY" benchmarks/gpu_decode.py --images "${IMAGES:-10000}" --batch-size 256 \
    --device "${DEVICE:-cuda}" --model "${MODEL:-resnet50}" --cpu-decode \
    --out "$OUT/gpu_decode.json" --profile "$OUT/profile.txt"

TESTS="${TESTS:-tests --ignore=tests/test_page.py}"
# shellcheck disable=SC2086
step tests 340 timeout -s INT -k 15 325 "$PY" -m pytest -q -rfEs --durations=15 \
    -n "${TEST_WORKERS:-14}" --dist loadfile --junitxml="$OUT/junit.xml" $TESTS

cat "$OUT/summary.txt"
exit $status
