#!/usr/bin/env bash
# The parameter search behind the `context` method's defaults
# (aggregator/src/anomaly/method/context.rs): a grid over the whole NAB corpus, standard
# profile, one parameter set for every file. Columns: standard, reward_low_FP_rate,
# reward_low_FN_rate, parameters.
# Usage: bash tests/nab/search-context.sh [NAB_DIR] > tests/nab/search-context.log
#        (release build first; BIN=path/to/telltale-aggregator to use another build)
set -euo pipefail
nab=${1:-../shared/nab}
bin=${BIN:-target/release/telltale-aggregator}
out=$(mktemp -d /var/tmp/nab-search.XXXXXX)
trap 'rm -rf "$out"' EXIT
for grids in 1 2 4; do
  for bins in 5 6 7 8 9; do
    for order in 5 6; do
      for hold in 50 75 100; do
        p="grids=$grids,bins=$bins,order=$order,hold=$hold"
        r=$("$bin" anomaly nab --dir "$nab" --out "$out" --method context --params "$p")
        s() { awk -v k="$1" '$0 ~ " "k":" {print $3}' <<<"$r"; }
        echo "$(s standard) $(s reward_low_FP_rate) $(s reward_low_FN_rate) $p"
      done
    done
  done
done
