#!/usr/bin/env bash
# One multi-GPU node: scheduler, one Dask-CUDA worker per GPU, then `dreml fit` on them once
# every worker has joined (`--wait-workers`). Memory settings and their relation: deploy/README.md.
# Usage: deploy/gpu_node.sh STORE.zarr PHENO OUT_PREFIX [extra dreml fit arguments...]
# Environment: CUDA_VISIBLE_DEVICES (the GPUs to use, default all), DEVICE_MEMORY_LIMIT (dask-cuda's
# spill threshold per GPU, default 0.9 of device memory: keep it above --gpu-budget-gib).
set -euo pipefail
store=$1 pheno=$2 out=$3; shift 3
# `dask cuda worker` starts one process per GPU in CUDA_VISIBLE_DEVICES, or per GPU of the node
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  n_gpus=$(awk -F, '{print NF}' <<<"$CUDA_VISIBLE_DEVICES")
else
  n_gpus=$(nvidia-smi -L | grep -c '^GPU ')
fi
scheduler_file=$(mktemp -d)/scheduler.json
dask scheduler --host 127.0.0.1 --scheduler-file "$scheduler_file" &
scheduler_pid=$!
trap 'kill ${worker_pid:-} $scheduler_pid 2>/dev/null || true' EXIT
until [ -s "$scheduler_file" ]; do sleep 1; done
# XLA must not preallocate GPU memory on the workers; shards live in CuPy's pool.
XLA_PYTHON_CLIENT_PREALLOCATE=false dask cuda worker --scheduler-file "$scheduler_file" \
  --device-memory-limit "${DEVICE_MEMORY_LIMIT:-0.9}" &
worker_pid=$!
address=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['address'])" "$scheduler_file")
# the driver's JAX runs on the CPU (dreml's default), leaving every GPU to its worker
dreml fit --store "$store" --pheno "$pheno" --out "$out" --scheduler "$address" --wait-workers "$n_gpus" "$@"
