#!/usr/bin/env bash
# Split benchmark: `coordinator split --strategy age-balanced` against two Python peers on a
# CODE-sized exams CSV (2.3 M exams, 1.56 M patients, the 15 CODE-15% columns), all in the same
# run, median of 3 runs each:
#   ours       the release binary, wall time of the whole process (CSV read, split, split.csv write)
#   seed-port  the seed's algorithm in Python: pandas read_csv + drop duplicates + our port of
#              get_splits (scripts/py/get_splits.py) + split.csv write; time after the imports
#   pandas     a plain vectorised pandas patient split (read_csv, unique, permutation, map, to_csv);
#              time after the imports
#   pandas-usecols  the same reading only the columns it needs (usecols)
# It also checks that our split.csv equals the seed port's byte for byte.
#
#   bash bench/split.sh              # data in out/bench-split/ (generated once)
#   RUNS=5 bash bench/split.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
. scripts/setup.sh
runs="${RUNS:-3}"
dir="$root/out/bench-split"
mkdir -p "$dir"

cargo build --release -q -p ecg-coordinator
bin="$root/target/release/coordinator"
[ -f "$dir/exams.csv" ] || "$ECG_PYTHON" bench/make_big_csv.py --out "$dir/exams.csv"

now() { date +%s.%N; }
ours=() seed=() pandas=() usecols=() pandas_proc=() usecols_proc=()
for r in $(seq "$runs"); do
  t0=$(now)
  "$bin" split --csv "$dir/exams.csv" --strategy age-balanced --seed 0 --fractions 0.15,0.05 \
    --out "$dir/split_ours.csv" > "$dir/ours.log"
  t1=$(now)
  ours+=("$(echo "$t1 - $t0" | bc -l)")
  echo "run $r ours:      ${ours[-1]} s  ($(tail -1 "$dir/ours.log"))"

  line=$("$ECG_PYTHON" bench/split_peers.py seed-port "$dir/exams.csv" "$dir/split_seed.csv")
  seed+=("$(echo "$line" | awk '{print $2}')")
  echo "run $r seed-port: $line"

  t0=$(now)
  line=$("$ECG_PYTHON" bench/split_peers.py pandas "$dir/exams.csv" "$dir/split_pandas.csv")
  t1=$(now)
  pandas+=("$(echo "$line" | awk '{print $2}')")
  pandas_proc+=("$(echo "$t1 - $t0" | bc -l)")
  echo "run $r pandas:    $line; whole process ${pandas_proc[-1]} s"

  t0=$(now)
  line=$("$ECG_PYTHON" bench/split_peers.py pandas-usecols "$dir/exams.csv" "$dir/split_pandas.csv")
  t1=$(now)
  usecols+=("$(echo "$line" | awk '{print $2}')")
  usecols_proc+=("$(echo "$t1 - $t0" | bc -l)")
  echo "run $r pandas-usecols: $line; whole process ${usecols_proc[-1]} s"
done

if cmp -s "$dir/split_ours.csv" "$dir/split_seed.csv"; then
  echo "split.csv: ours and the seed port are identical ($(($(wc -l < "$dir/split_ours.csv") - 1)) exams)"
else
  echo "split.csv: ours and the seed port DIFFER" >&2
  exit 1
fi
cat "$dir/ours.log"

"$ECG_PYTHON" - "${ours[*]}" "${seed[*]}" "${pandas[*]}" "${usecols[*]}" "${pandas_proc[*]}" "${usecols_proc[*]}" <<'EOF'
import statistics, sys
ours, seed, pandas, usecols, pandas_proc, usecols_proc = (
    statistics.median(map(float, a.split())) for a in sys.argv[1:7])
print("median of %d runs: ours %.2f s (whole process), seed-port %.2f s, pandas %.2f s, pandas-usecols %.2f s"
      " (Python peers timed after their imports)" % (len(sys.argv[1].split()), ours, seed, pandas, usecols))
print("ratios: seed-port / ours = %.1fx, pandas / ours = %.1fx, pandas-usecols / ours = %.1fx"
      % (seed / ours, pandas / ours, usecols / ours))
print("whole-process peers: pandas %.2f s (%.1fx), pandas-usecols %.2f s (%.1fx)"
      % (pandas_proc, pandas_proc / ours, usecols_proc, usecols_proc / ours))
EOF
