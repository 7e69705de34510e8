#!/usr/bin/env bash
# The GPU checks of issue 6 on a machine with one CUDA device, from the repository root:
#
#   bash scripts/gpu_check.sh tests    # tests/test_cuda.py: CPU == GPU, syncs, fit/predict on GPU
#   bash scripts/gpu_check.sh step     # latent ODE training step vs torchdiffeq (batch 100, 1000)
#   bash scripts/gpu_check.sh solver   # the solver benchmark vs torchdiffeq and torchode
#
# Needs torch with CUDA, pytorch-lightning, torchmetrics, pandas, matplotlib, jsonargparse and
# (for the benchmarks) torchdiffeq and torchode; latentode itself is taken from this checkout.
# Logs and reports go to $OUT (default: gpu_out/); copy the reports you keep into reports/.
set -u -o pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
status=0

for stage in "$@"; do
    case "$stage" in
    tests)
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
        "$PY" -c 'import torch, pytorch_lightning as pl; print("torch", torch.__version__,
"cuda", torch.version.cuda, "lightning", pl.__version__, torch.cuda.get_device_name())' |
            tee -a "$OUT/gpu.txt"
        "$PY" -m pytest tests/test_cuda.py -v -p no:cacheprovider -rA 2>&1 |
            tee "$OUT/test_cuda.log" || status=1
        ;;
    step)
        "$PY" benchmarks/latent_ode_step.py --device cuda \
            --output "$OUT/latent_ode_step_cuda.md" 2>&1 | tail -n 25 || status=1
        "$PY" benchmarks/latent_ode_step.py --device cuda --batch 1000 \
            --output "$OUT/latent_ode_step_cuda_b1000.md" 2>&1 | tail -n 25 || status=1
        ;;
    solver)
        "$PY" benchmarks/solver_benchmark.py --device cuda \
            --output "$OUT/solver_benchmark_cuda.md" 2>&1 | tee "$OUT/solver_benchmark.log" |
            tail -n 60 || status=1
        ;;
    *)
        echo "unknown stage $stage (tests, step, solver)" >&2
        exit 2
        ;;
    esac
done
exit $status
