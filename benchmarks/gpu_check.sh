#!/usr/bin/env bash
# The prepared device check (docs/benchmarks.md, "GPU decoding"): at most ~8 minutes on a
# lent GPU machine, run from the repository root through the device tool, e.g.
#
#     bash benchmarks/gpu_check.sh            # writes everything under $OUT (or results/gpu_check)
#
# The device has its own Python and torch build and no network. This script uses them as
# they are: the repository goes on PYTHONPATH (datasets/ as shiftbench_datasets through a
# symbolic link, the way the installed package names it); packages the tests need that the
# device lacks are installed from carried wheels when a folder of them exists
# ($WHEELS, default shared/wheels), else listed in env.txt and the steps that need them fail
# visibly. Steps, each under its own time limit:
#   1. env.txt: nvidia-smi, python, torch/torchvision/CUDA, which imports work (~10 s)
#   2. the device-relevant tests with the device's torch (browser tests deselected): the GPU
#      decode path (incl. the CUDA-only test), runs, forward options, eval speed, models,
#      TTA, retention (<= 200 s)
#   3. benchmarks/gpu_decode.py: 10,000 JPEGs 500x375, resnet50 at 224 px, bf16,
#      channels_last: bare decode, bare forward, harness (GPU decode; CPU decode too when
#      time allows) (<= 240 s)
# Exit status: non-zero when a step failed; summary.txt says which.
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

WHEELS="${WHEELS:-shared/wheels}"
MODULES="torch torchvision timm hydra omegaconf pandas pyarrow sklearn scipy PIL matplotlib maze_dataset muutils torchmetrics tqdm pytest submitit joblib"
missing() {
    "$PY" - $MODULES <<'PYEOF'
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
PYEOF
}
if [ -n "$(missing)" ] && [ -d "$WHEELS" ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/*.whl \
        >> "$OUT/env.txt" 2>&1 || true
fi
step env 60 bash -c "nvidia-smi; '$PY' -c 'import sys, torch, torchvision; print(sys.version); \
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"-\"); \
print(\"torchvision\", torchvision.__version__)'; echo missing: \$('$PY' -c 'import importlib.util as u; \
print(\" \".join(m for m in \"$MODULES\".split() if u.find_spec(m) is None))')"

# Overridable for a smoke test of this script on a CPU machine:
#   DEVICE=cpu IMAGES=32 MODEL=test_resnet TESTS=tests/test_gpudecode.py bash benchmarks/gpu_check.sh
TESTS="${TESTS:-tests/test_gpudecode.py tests/test_retention.py tests/test_run.py tests/test_eval_speed.py tests/test_models.py tests/test_tta.py}"
# shellcheck disable=SC2086
step tests 200 "$PY" -m pytest -q -rs --durations=15 -p no:cacheprovider $TESTS -k "not browser"

step bench 240 "$PY" benchmarks/gpu_decode.py --images "${IMAGES:-10000}" --batch-size 256 \
    --device "${DEVICE:-cuda}" --model "${MODEL:-resnet50}" --cpu-decode \
    --out "$OUT/gpu_decode.json"

cat "$OUT/summary.txt"
exit $status
