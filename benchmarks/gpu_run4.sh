#!/usr/bin/env bash
# Fourth GPU session, one call (~8 min): MAML and FOMAML on Omniglot resumed from the shipped
# checkpoints (data/omniglot-{maml,fomaml}.pt) for MINUTES each, side by side; the CUDA tests beside
# them; then each evaluated on the 600 fixed test tasks. Needs data/omniglot/omniglot-28x28.npz carried.
set -u
OUT=${OUT:-gpu-out}; MINUTES=${MINUTES:-6}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}:$PWD OMP_NUM_THREADS=4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
for algo in maml fomaml; do
  cp "data/omniglot-$algo.pt" "$OUT/omniglot-$algo.pt"
  python3 -m mamlkit train --task omniglot --algo $algo --device cuda --no-progress --val-every 1000 \
    --checkpoint-every 500 --max-minutes "$MINUTES" --resume --out "$OUT/omniglot-$algo.pt" > "$OUT/$algo.log" 2>&1 &
done
timeout 150 python3 -m pytest tests/test_reptile.py tests/test_batched.py tests/test_training.py tests/test_maml.py \
  tests/test_omniglot.py -q -p no:cacheprovider -k cuda > "$OUT/tests.log" 2>&1
echo "pytest exit $?" >> "$OUT/tests.log"
wait
for algo in maml fomaml; do
  timeout 60 python3 -m mamlkit evaluate "$OUT/omniglot-$algo.pt" --device cuda --json > "$OUT/eval-$algo.json" 2> "$OUT/eval-$algo.err"
done
