#!/usr/bin/env bash
# The one GPU session: CUDA tests, the GPU speed benchmark, and Omniglot 5-way 1-shot training of
# MAML, FOMAML and Reptile (in parallel, wall-clock limited), then their evaluation on 600 test tasks.
# Usage: OUT=dir MINUTES=5.5 bash benchmarks/gpu_run.sh
set -u
OUT=${OUT:-gpu-out}; MINUTES=${MINUTES:-5.5}; mkdir -p "$OUT" runs
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}:$PWD
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/train.log"

timeout 120 python3 benchmarks/speed.py --device cuda --repeats 3 --iters 10 2 --out "$OUT/bench-gpu.json" \
  > "$OUT/bench.log" 2>&1

common=(--task omniglot --ways 5 --device cuda --no-progress --checkpoint-every 500 --max-minutes "$MINUTES")
python3 -m mamlkit train --algo maml --val-every 1000 "${common[@]}" --out "$OUT/omniglot-maml.pt" > runs/o-maml.log 2>&1 &
python3 -m mamlkit train --algo fomaml --val-every 1000 "${common[@]}" --out "$OUT/omniglot-fomaml.pt" > runs/o-fomaml.log 2>&1 &
python3 -m mamlkit train --algo reptile --val-every 2000 --iterations "${REPTILE_ITERATIONS:-6000}" "${common[@]}" \
  --out "$OUT/omniglot-reptile.pt" > runs/o-reptile.log 2>&1 &
timeout 300 python3 -m pytest tests -q -p no:cacheprovider --continue-on-collection-errors -k "not short_omniglot_run" > "$OUT/tests.log" 2>&1
echo "pytest exit $?" >> "$OUT/tests.log"
wait
cat runs/o-*.log >> "$OUT/train.log"
python3 -m mamlkit evaluate "$OUT"/omniglot-{maml,fomaml,reptile}.pt --device cuda --json > "$OUT/eval.json" 2>> "$OUT/train.log"
python3 -m mamlkit evaluate "$OUT"/omniglot-{maml,fomaml}.pt --device cuda >> "$OUT/train.log" 2>&1
python3 -m mamlkit evaluate "$OUT"/omniglot-reptile.pt --device cuda >> "$OUT/train.log" 2>&1
