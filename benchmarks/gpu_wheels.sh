#!/usr/bin/env bash
# Downloads into .whl/ the wheels of hm_hf's requirements that the GPU device machine's Python (3.12, with
# torch 2.11, transformers 5.17, peft, accelerate, pyarrow, pandas, psutil already there) lacks, plus the
# transformers and peft versions hm_hf is tested with here (pure Python, ~13 MB), for
# benchmarks/run_gpu.sh to install there. (transformers 5.24 needs huggingface-hub>=1.31, tokenizers 0.23.x and
# safetensors>=0.8: the device's 1.33 / 0.23.2 / 0.8.0, read from its pip list, qualify.) Run it here, from anywhere, with PyPI access; then hand `.whl`
# to the device run (carry) and start it with `bash benchmarks/run_gpu.sh "$OUT"`.
#
#   bash benchmarks/gpu_wheels.sh [extra NAME==VERSION ...]    # e.g. pyarrow==<version> if its pyarrow is too old
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY="${PYTHON:-.venv/bin/python}"
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
packages=("datasets==$(version datasets)" "dill==$(version dill)" "multiprocess==$(version multiprocess)"
          "transformers==$(version transformers)" "peft==$(version peft)" "$@")
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl "${packages[@]}"
ls -la .whl
