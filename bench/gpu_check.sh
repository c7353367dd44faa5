#!/usr/bin/env bash
# What a machine with a GPU runs first, in one go (docs/speed.md, "On a
# GPU"): the GPU tests, the side-by-side benchmark against PyTorch on CUDA
# at batch 128 and 32, what the small fused kernels buy there, and one real
# MNIST epoch with its time.
#
#   bash bench/gpu_check.sh DIR [REFERENCE]
#
# DIR: a folder of the four MNIST IDX files. REFERENCE: the PyTorch CapsNet
# benchmark script (default bench/torch_reference.py). PYTHON (default
# .venv/bin/python) has capsnet's requirements and CuPy; TORCH_PYTHON
# (default python3) has PyTorch with CUDA: where it has no torch, the
# side-by-side step is left out, and says so. Everything is printed, and kept in OUT
# (default gpu_check/).
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: bash bench/gpu_check.sh DIR [REFERENCE]}
reference=${2:-bench/torch_reference.py}
python=${PYTHON:-.venv/bin/python}
torch_python=${TORCH_PYTHON:-python3}
out=${OUT:-gpu_check}
mkdir -p "$out"
failed=0
export PYTHONUNBUFFERED=1

step() {    # step NAME COMMAND...: run it, log it, count a failure
    local name=$1; shift
    echo "=== $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee "$out/$name.log"
    local status=${PIPESTATUS[0]}
    echo "=== $name: exit $status after $((SECONDS - start)) s"
    [ "$status" = 0 ] || failed=$((failed + 1))
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
    2>&1 | tee "$out/gpu.txt"
"$python" -c 'import cupy, numpy, sys; print("python", sys.version.split()[0], "numpy", numpy.__version__, "cupy", cupy.__version__)' \
    | tee -a "$out/gpu.txt"

step tests env CAPSNET_REQUIRE_GPU=1 "$python" -m pytest -n 0 -p no:cacheprovider \
    tests/test_gpu.py
if "$torch_python" -c "import torch" 2>/dev/null; then
    for batch in 128 32; do
        step "side_by_side_$batch" "$python" bench/side_by_side.py -g 0 \
            --batch "$batch" --pairs 3 --steps 20 --warmup 3 --reference \
            "$torch_python bench/torch_on_gpu.py $reference"
    done
else
    echo "=== side_by_side: left out ($torch_python has no torch)"
fi
# what the six small fused kernels buy on this GPU (on 2 CPU cores: 7-9%
# at batch 1, nothing measurable at 32 and 128; docs/speed.md)
for batch in 128 32 1; do
    step "fused_small_ops_$batch" "$python" bench/side_by_side.py -g 0 \
        --batch "$batch" --pairs 3 --steps 20 --warmup 3 --reference \
        "$python bench/benchmark.py -g 0 --readable squash length margin_loss masked_capsules decoder reconstruction_loss"
done
rm -rf "$out/epoch"
step epoch "$python" train.py -g 0 --data-dir "$data" -e 1 \
    --save "$out/epoch"
"$python" - "$out/epoch/log" <<'PY' | tee "$out/epoch.txt"
import json, sys
entry = json.load(open(sys.argv[1]))[-1]
print('one MNIST epoch on the GPU: {:.1f} s, validation accuracy {:.2%}'
      .format(entry['elapsed_time'], entry['validation/main/accuracy']))
PY
echo "=== $failed step(s) failed"
exit "$failed"
