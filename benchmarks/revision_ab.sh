#!/usr/bin/env bash
# Speed of two revisions of sparsearch, interleaved: each benchmark runs for OLD, NEW, NEW, OLD
# (ABBA), each revision from its own git worktree and against its peer in the same run (bm25s,
# pyseismic-lsr), so a slow minute on a shared machine shows up in both.
#
#   benchmarks/revision_ab.sh OLD_REV [NEW_REV] [bm25|approx|single ...]
#
# bm25:   benchmarks/bm25_vs_bm25s.py on SciFact (QPS and latency vs bm25s)
# approx: benchmarks/approx_vs_peers.py, 200k synthetic documents, pyseismic-lsr (grid: $APPROX_ARGS,
#         default 300 queries, query_cut 5 8 x heap_factor 0.8 0.9 1.0, 3 passes)
# single: exact single-query latency of BM25 on SciFact (k=10, 1 thread), median over 300
#         queries, best of 7 repetitions (benchmarks/single_query_latency.py)
# Needs the bench extra (make bench). Outputs go to benchmarks/results/revision_ab/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old=${1:?usage: revision_ab.sh OLD_REV [NEW_REV] [bm25|approx|single ...]}
new=${2:-HEAD}
shift $(( $# >= 2 ? 2 : 1 ))
what=("${@:-bm25 approx single}")
py=${PYTHON:-$root/.venv/bin/python}
data=${SPARSEARCH_DATA:-$root/../shared/data}
out=$root/benchmarks/results/revision_ab
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/old" 2>/dev/null; git -C "$root" worktree remove --force "$work/new" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$out"
git -C "$root" worktree add -f --detach "$work/old" "$old" >/dev/null
git -C "$root" worktree add -f --detach "$work/new" "$new" >/dev/null

run() {  # $1 = benchmark, $2 = label, $3 = tree, $4 = pass
  local log="$out/$1_$2_$4.txt"
  case $1 in
    bm25) PYTHONPATH=$3/src "$py" "$3/benchmarks/bm25_vs_bm25s.py" --data "$data/scifact" --repeats 5 > "$log" 2>&1 ;;
    approx) PYTHONPATH=$3/src "$py" "$3/benchmarks/approx_vs_peers.py" --sets synthetic --docs 200000 \
              --peers seismic ${APPROX_ARGS:---queries 300 --query-cuts 5 8 --heap-factors 0.8 0.9 1.0 --passes 3} \
              --out "$out/approx_$2_$4" --tag ab > "$log" 2>&1 ;;
    single) PYTHONPATH=$3/src SPARSEARCH_DATA=$data "$py" "$root/benchmarks/single_query_latency.py" > "$log" 2>&1 ;;
  esac
  echo "$(date +%T) $1 $2 pass $4 -> $log"
}
for b in ${what[@]}; do
  run "$b" old "$work/old" 1
  run "$b" new "$work/new" 1
  run "$b" new "$work/new" 2
  run "$b" old "$work/old" 2
done
