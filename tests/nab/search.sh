#!/usr/bin/env bash
# The parameter search behind the detector's defaults (aggregator/src/anomaly/detect.rs):
# a grid over the whole NAB corpus, standard profile, one parameter set for every file.
# Usage: bash tests/nab/search.sh [NAB_DIR] > tests/nab/search.log   (release build first)
set -euo pipefail
nab=${1:-../shared/nab}
bin=${BIN:-target/release/telltale-aggregator}
out=$(mktemp -d /var/tmp/nab-search.XXXXXX)
trap 'rm -rf "$out"' EXIT
for memory in 1000 2000; do
  for calibration in 500 1000 2000; do
    for window in 6 10 16; do
      for hold in 100 150 200; do
        p="short=0,alarm=0.99,memory=$memory,calibration=$calibration,window=$window,hold=$hold"
        s=$("$bin" anomaly nab --dir "$nab" --out "$out" --params "$p" | awk '/ standard:/ {print $3}')
        echo "$s $p"
      done
    done
  done
done
