#!/usr/bin/env bash
# The leave-one-category-out NAB score: every parameter set below is run once over the whole
# corpus, then for each category the set and threshold best on the other six categories are
# scored on it (`telltale-aggregator anomaly nab-loco`). Compare its last line with the full
# corpus score of the chosen defaults: the difference is what tuning on the corpus bought.
# Usage: bash tests/nab/loco.sh [NAB_DIR] > tests/nab/loco.log   (release build first)
set -euo pipefail
nab=${1:-../shared/nab}
bin=${BIN:-target/release/telltale-aggregator}
out=$(mktemp -d /var/tmp/nab-loco.XXXXXX)
trap 'rm -rf "$out"' EXIT
runs=()
one() {
  local name=$1 method=$2 params=$3
  local s
  s=$("$bin" anomaly nab --dir "$nab" --out "$out/$name" --method "$method" --params "$params" | awk '/ standard:/ {print $3}')
  echo "$s $name $method $params"
  runs+=(--run "$name=$out/$name")
}
for memory in 1000 2000; do
  for calibration in 500 1000; do
    for window in 6 10 16; do
      one "knn-m$memory-c$calibration-w$window" knn "memory=$memory,calibration=$calibration,window=$window"
    done
  done
done
for grids in 1 2 4; do
  for bins in 6 7 8; do
    for hold in 60 75 100; do
      one "context-g$grids-b$bins-h$hold" context "grids=$grids,bins=$bins,hold=$hold"
    done
  done
done
# How a widening grows the range (bounding re-learning on rising series), at the defaults.
for burst in 0 5 10 30; do
  for creep in 0.003 0.01 0.05; do
    one "context-burst$burst-creep$creep" context "burst=$burst,creep=$creep"
  done
done
# The escape from a hold for a value far past the range (0: none).
for escape in 0 0.1 0.25 1; do
  one "context-escape$escape" context "escape=$escape"
done
one ewma ewma ""
one seasonal seasonal ""
one changepoint changepoint ""
"$bin" anomaly nab-loco --dir "$nab" "${runs[@]}"
