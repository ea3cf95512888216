#!/usr/bin/env bash
# Second GPU session: CUDA tests alone, the GPU benchmark alone, then more Omniglot training
# (MAML and FOMAML resumed from the first session's checkpoints, Reptile with a short full schedule).
set -u
OUT=${OUT:-gpu-out}; MINUTES=${MINUTES:-2.5}; mkdir -p "$OUT" runs
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}:$PWD OMP_NUM_THREADS=4
timeout 100 python3 -m pytest tests -q -p no:cacheprovider --continue-on-collection-errors -k cuda > "$OUT/tests.log" 2>&1
echo "pytest exit $?" >> "$OUT/tests.log"
timeout 110 python3 benchmarks/speed.py --device cuda --repeats 3 --iters 10 2 --out "$OUT/bench-gpu.json" > "$OUT/bench.log" 2>&1
cp runs/gpu/omniglot-maml.pt runs/gpu/omniglot-fomaml.pt "$OUT"/
common=(--task omniglot --device cuda --no-progress --checkpoint-every 250 --max-minutes "$MINUTES")
python3 -m mamlkit train --algo maml --val-every 1000 "${common[@]}" --resume --out "$OUT/omniglot-maml.pt" > runs/o-maml.log 2>&1 &
python3 -m mamlkit train --algo fomaml --val-every 1000 "${common[@]}" --resume --out "$OUT/omniglot-fomaml.pt" > runs/o-fomaml.log 2>&1 &
python3 -m mamlkit train --algo reptile --val-every 1500 --iterations "${REPTILE_ITERATIONS:-1500}" "${common[@]}" \
  --out "$OUT/omniglot-reptile.pt" > runs/o-reptile.log 2>&1 &
wait
cat runs/o-*.log > "$OUT/train.log"
