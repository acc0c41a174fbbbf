#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh carries to a GPU machine: the lock's versions of the
# packages the tests import that its image lacks (or has in another version where it
# matters: pandas, timm), for its Python 3.12, into .whl/ (ignored by git; name it in the
# device tool's `carry`). ~58 MB: with the working tree it fits the tool's 64 MiB. selenium is
# left out (the browser tests do not run there). Run here, once per session:
#
#     bash benchmarks/device_wheels.sh && echo /.whl/ >> .git/info/exclude
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-.venv/bin/python -m pip}"
NAMES="alembic cmaes colorlog ftfy httpcore2 httpx2 hydra-core hydra-joblib-launcher
hydra-optuna-sweeper hydra-submitit-launcher imagecorruptions-imaug littleutils Mako MAPIE
maze-dataset muutils open_clip_torch optuna outcome outdated platformdirs PySocks pytorch-ood
pytz sniffio submitit trio truststore wcwidth wilds zanj timm plotly SQLAlchemy faiss-cpu
pandas omegaconf defusedxml setuptools"
mkdir -p .whl
for name in $NAMES; do
    pin=$(grep -i "^${name}==" requirements.lock) || { echo "$name: not in requirements.lock" >&2; exit 1; }
    $PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$pin"
done
# antlr4-python3-runtime (Hydra's parser) is published as a source archive only: built here
pin=$(grep -i "^antlr4-python3-runtime==" requirements.lock)
tmp=$(mktemp -d)
$PIP download -q --no-deps --no-binary=:all: -d "$tmp" "$pin"
$PIP wheel -q --no-deps -w .whl "$tmp"/antlr4*
du -sh .whl
