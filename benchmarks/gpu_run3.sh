#!/usr/bin/env bash
# Third GPU session, one call (~9.5 min): the W2 benchmark alone; then Reptile on Omniglot with the
# Reptile code's protocol (inner mini-batches of 10), its full ε schedule sized to the time left after
# measuring its speed, the CUDA tests beside it; then the 600-task evaluation.
set -u
OUT=${OUT:-gpu-out}; DEV=${DEV:-cuda}; PROBE=${PROBE:-100}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}:$PWD OMP_NUM_THREADS=4
END=$(( $(date +%s) + ${BUDGET:-550} ))
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
timeout "${BENCH_S:-200}" python3 benchmarks/speed.py --device $DEV --workloads W2 --repeats 3 --iters 10 10 \
  --out "$OUT/bench-gpu-w2.json" > "$OUT/bench.log" 2>&1
echo "bench exit $?" >> "$OUT/bench.log"
LEFT=$(( END - $(date +%s) - 60 ))
python3 - "$LEFT" "$DEV" "$PROBE" > "$OUT/plan.txt" 2>&1 <<'PY'
import sys, time, torch
from mamlkit.config import Config
from mamlkit.families import TrainingTasks
from mamlkit.training import new_run, outer_step
cfg = Config(task="omniglot", algo="reptile").resolved()
run, source = new_run(cfg, sys.argv[2]), TrainingTasks(cfg, sys.argv[2])
n = int(sys.argv[3])
sync = torch.cuda.synchronize if sys.argv[2] == "cuda" else (lambda: None)
for i in range(n + 30):
    if i == 30:
        sync(); t = time.perf_counter()
    outer_step(run, source.sample(cfg.meta_batch_size, run.generator), True); run.iteration += 1
sync(); rate = n / (time.perf_counter() - t)
print(f"reptile batched on {sys.argv[2]}: {rate:.1f} it/s alone; {sys.argv[1]} s left")
print(max(1000, int(0.75 * rate * (int(sys.argv[1]) - 25)) // 100 * 100))
PY
ITERS=$(tail -1 "$OUT/plan.txt"); [[ "$ITERS" =~ ^[0-9]+$ ]] || ITERS=5000
MINUTES=$(python3 -c "print(max(0.5, ($END - 45 - $(date +%s)) / 60))")
python3 -m mamlkit train --task omniglot --algo reptile --device $DEV --no-progress --iterations "$ITERS" \
  --val-every 2000 --checkpoint-every 1000 --max-minutes "$MINUTES" --out "$OUT/omniglot-reptile.pt" \
  > "$OUT/reptile.log" 2>&1 &
timeout 150 python3 -m pytest tests -q -p no:cacheprovider --continue-on-collection-errors -k cuda \
  > "$OUT/tests.log" 2>&1
echo "pytest exit $?" >> "$OUT/tests.log"
wait
timeout 60 python3 -m mamlkit evaluate "$OUT/omniglot-reptile.pt" --device $DEV > "$OUT/eval.log" 2>&1
echo "evaluate exit $?" >> "$OUT/eval.log"
