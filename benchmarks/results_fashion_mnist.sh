#!/usr/bin/env bash
# The Deep Dive experiments of docs/results.md on real Fashion-MNIST (Debian dataset-fashion-mnist),
# 60,000 training images, the authors' settings (fashion_mnist recipe) at 15 epochs instead of 49.
# Run from the repository root; results go to runs/results/, the report to docs/results/.
#   KERAS_BACKEND=jax bash benchmarks/results_fashion_mnist.sh [space|k|seeds|halt|auto|select|authors|report]...
set -euo pipefail
DC=${DC:-.venv/bin/deepcluster}
DATA=(--source idx --data-dir /usr/share/datasets/fashion-mnist)
OUT=runs/results
EPOCHS=15
step() { echo "=== $* ($(date +%T))"; }
for what in "${@:-space k seeds}"; do case $what in
space)  step "filter quality, 50 seeds"
        /usr/bin/time -f "space wall %e s" $DC space fashion_mnist --seeds 0-49 "${DATA[@]}" --out $OUT/space ;;
k)      step "k sweep, seed 61"
        /usr/bin/time -f "k sweep wall %e s" $DC sweep fashion_mnist --clusters 5,10,50,200 --seeds 61 \
            --epochs $EPOCHS --probe "${DATA[@]}" --out $OUT/k ;;
seeds)  # Five seeds spread over the filter-quality range of the space run, and 61, at k=5.
        SEEDS=$(python3 - <<'PY'
import csv
rows = sorted(csv.DictReader(open("runs/results/space/space.csv")), key=lambda r: float(r["nmi"]))
picks = [rows[round(q * (len(rows) - 1))]["seed"] for q in (0, 0.25, 0.5, 0.75, 1)]
print(",".join(str(int(float(s))) for s in picks) + ",61")
PY
)
        step "seeds $SEEDS, k=5, with random-init probes"
        /usr/bin/time -f "seeds wall %e s" $DC sweep fashion_mnist --seeds "$SEEDS" --epochs $EPOCHS \
            --probe --probe-random "${DATA[@]}" --out $OUT/seeds ;;
halt)   step "halting at 1, 3, 8 epochs and never, seed 61"
        /usr/bin/time -f "halt wall %e s" $DC sweep fashion_mnist --halt-after 1,3,8,none --epochs $EPOCHS \
            --probe "${DATA[@]}" --out $OUT/halt ;;
auto)   # Threshold chosen from the k=5 run's NMI(t, t-1): 0.78-0.89 from epoch 3 on.
        step "automatic halt: NMI(t, t-1) >= 0.8 for 2 clusterings, seed 61"
        /usr/bin/time -f "auto wall %e s" $DC sweep fashion_mnist --halt-when-stable 0.8 --halt-patience 2 --epochs $EPOCHS \
            --probe "${DATA[@]}" --out $OUT/auto ;;
select) step "semi-supervised selection with 1,000 labelled images"
        /usr/bin/time -f "select wall %e s" $DC select fashion_mnist --labelled 1000 --seeds 0-19 \
            -k 5,10,50 --trial-epochs 5 --epochs $EPOCHS --probe "${DATA[@]}" --out $OUT/select ;;
authors) step "the authors' full run: 49 epochs, k=5, seed 61"
        /usr/bin/time -f "authors wall %e s" $DC sweep fashion_mnist --probe --probe-random \
            "${DATA[@]}" --out $OUT/authors ;;
report) step "report"
        for part in k seeds halt auto select authors space; do
            [ -d $OUT/$part ] && $DC report $OUT/$part --out docs/results/$part
        done ;;
esac; done
