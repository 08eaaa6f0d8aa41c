#!/usr/bin/env bash
# One multi-GPU node: scheduler, one Dask-CUDA worker per GPU, then `dreml fit` on them.
# Usage: deploy/gpu_node.sh STORE.zarr PHENO OUT_PREFIX [extra dreml fit arguments...]
set -euo pipefail
store=$1 pheno=$2 out=$3; shift 3
scheduler_file=$(mktemp -d)/scheduler.json
dask scheduler --host 127.0.0.1 --scheduler-file "$scheduler_file" &
scheduler_pid=$!
trap 'kill $worker_pid $scheduler_pid 2>/dev/null || true' EXIT
until [ -s "$scheduler_file" ]; do sleep 1; done
# XLA must not preallocate GPU memory on the workers; shards live in CuPy's pool.
XLA_PYTHON_CLIENT_PREALLOCATE=false dask cuda worker --scheduler-file "$scheduler_file" \
  --device-memory-limit 0.9 &
worker_pid=$!
address=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['address'])" "$scheduler_file")
dreml fit --store "$store" --pheno "$pheno" --out "$out" --scheduler "$address" "$@"
