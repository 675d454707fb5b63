#!/usr/bin/env bash
# The Deep Dive's three claims (docs/results.md) on real Fashion-MNIST (Debian dataset-fashion-mnist),
# 60,000 training images, the authors' settings (fashion_mnist recipe) at 15 epochs instead of 49.
# Run from the repository root; runs go to runs/results/, the reports to docs/results/.
# Every stage is resumable: finished runs and probes are kept, so rerunning a stage finishes it.
#   KERAS_BACKEND=tensorflow bash benchmarks/results_fashion_mnist.sh [space grid halt auto grid-k select authors report]...
# Without arguments, in order of need: space grid halt auto grid-k select report (each claim gets
# its core runs first; the authors' 49-epoch run is separate). Backend: TensorFlow, the fastest
# on the 2-core CPU of docs/results.md (9.4-11 s per epoch against JAX's 14-17 s in
# docs/benchmarks/cycle and cache_cycle); one pipeline at a time (two would share the cores).
set -euo pipefail
DC=${DC:-.venv/bin/deepcluster}
DATA=(--source idx --data-dir /usr/share/datasets/fashion-mnist)
OUT=runs/results
EPOCHS=15
step() { echo "=== $* ($(date +%T))"; }
# Nine seeds evenly spread over the `space` ranking of 50 (quantiles 0, 1/8, ..., 1): three in each
# third. Claim 2 uses every other one of them (quantiles 0, 1/4, 1/2, 3/4, 1).
picks() { python3 - "$1" <<'PY'
import csv, sys
rows = sorted(csv.DictReader(open("runs/results/space/space.csv")), key=lambda r: float(r["nmi"]))
seeds = [int(float(rows[round(i * (len(rows) - 1) / 8)]["seed"])) for i in range(9)]
print(",".join(map(str, seeds if sys.argv[1] == "9" else seeds[::2])))
PY
}
for what in ${@:-space grid halt auto grid-k select report}; do case $what in
space)  step "claim 1: filter quality of 50 seeds"
        /usr/bin/time -f "space wall %e s" $DC space fashion_mnist --seeds 0-49 "${DATA[@]}" --out $OUT/space ;;
grid)   step "claim 1: seeds $(picks 9), k=5, with the untrained networks' probes (once per seed)"
        /usr/bin/time -f "grid k=5 wall %e s" $DC sweep fashion_mnist --clusters 5 --seeds "$(picks 9)" \
            --epochs $EPOCHS --probe --probe-random "${DATA[@]}" --out $OUT/grid ;;
grid-k) step "claim 1: seeds $(picks 9) x k in 10, 50, 200"
        /usr/bin/time -f "grid k=10,50,200 wall %e s" $DC sweep fashion_mnist --clusters 10,50,200 \
            --seeds "$(picks 9)" --epochs $EPOCHS --probe "${DATA[@]}" --out $OUT/grid ;;
halt)   # Never halting is the grid's k=5 runs of the same seeds.
        step "claim 2: halt after 1, 3, 5, 10 epochs, seeds $(picks 5), k=5"
        /usr/bin/time -f "halt wall %e s" $DC sweep fashion_mnist --halt-after 1,3,5,10 --seeds "$(picks 5)" \
            --epochs $EPOCHS --probe "${DATA[@]}" --out $OUT/halt ;;
auto)   step "claim 2: automatic halt, NMI(t, t-1) >= 0.8 for 2 clusterings, seeds $(picks 5)"
        /usr/bin/time -f "auto wall %e s" $DC sweep fashion_mnist --halt-when-stable 0.8 --halt-patience 2 \
            --seeds "$(picks 5)" --epochs $EPOCHS --probe "${DATA[@]}" --out $OUT/auto ;;
select) # Candidates are the grid's seeds and k, so every choice's 15-epoch probe is in the grid:
        # --choose-only skips the final run, which would repeat a grid run.
        for draw in 0 1 2 3 4; do
            step "claim 3: select with 600 labelled images, draw $draw"
            /usr/bin/time -f "select draw $draw wall %e s" $DC select fashion_mnist --labelled 600 \
                --draw $draw --seeds "$(picks 9)" -k 5,10,50,200 --trial-epochs 5 --epochs $EPOCHS \
                --choose-only "${DATA[@]}" --out $OUT/select/draw$draw
        done ;;
authors) step "the authors' full run: 49 epochs, k=5, seed 61"
        /usr/bin/time -f "authors wall %e s" $DC sweep fashion_mnist --probe --probe-random \
            "${DATA[@]}" --out $OUT/authors ;;
report) step "reports"
        $DC report $OUT/grid $OUT/space --out docs/results/claim1
        $DC report $OUT/grid $OUT/halt $OUT/auto --out docs/results/claim2
        $DC report $OUT/select $OUT/grid --out docs/results/claim3
        [ -d $OUT/authors ] && $DC report $OUT/authors --out docs/results/authors ;;
*)      echo "unknown stage $what (space grid halt grid-k select auto authors report)"; exit 2 ;;
esac; done
