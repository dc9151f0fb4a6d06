#!/usr/bin/env bash
# Side-by-side comparison of two shoal-sim builds: the method of BENCHMARKS.md
# (simulator, eighth round on). Both runs of a pair start together, one per
# core, so that the machine's drift hits both alike; CPU is user + sys time.
#
#   bench/simulator/ab.sh BIN_A BIN_B [PAIRS] [SCENARIO] [shoal-sim run options...]
#
# e.g. bench/simulator/ab.sh /tmp/before/shoal-sim target/release/shoal-sim 2 \
#        simulator/scenarios/steady_1000.toml --duration 120s
#
# Prints, per run: user, sys and total CPU-s, peak RSS, and the digest; warns
# when a pair's digests differ (a change that should keep behaviour did not).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
a=$1 b=$2 pairs=${3:-2}
scenario=${4:-"$(dirname "$0")/../../simulator/scenarios/steady_1000.toml"}
shift $(( $# < 4 ? $# : 4 ))
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # BIN TAG [options...]
  local bin=$1 tag=$2
  shift 2
  /usr/bin/time -f "%U %S %M" -o "$out/$tag.time" "$bin" run "$scenario" "$@" \
    --out "$out/$tag" > "$out/$tag.log" 2>&1 || true
}

for pair in $(seq 1 "$pairs"); do
  run "$a" "a$pair" "${@}" &
  run "$b" "b$pair" "${@}" &
  wait
  for side in a b; do
    digest=$(grep -o 'digest [0-9a-f]*' "$out/$side$pair.log" | cut -d' ' -f2 || true)
    tail -n 1 "$out/$side$pair.time" | awk -v p="$pair" -v s="$side" -v d="${digest:-none}" \
      '{ printf "pair %s %s: user %6.1f  sys %5.1f  CPU-s %6.1f  peak %.2f GB  digest %s\n",
           p, s, $1, $2, $1 + $2, $3 / 1e6, d }'
  done
  da=$(grep -o 'digest [0-9a-f]*' "$out/a$pair.log" || true)
  db=$(grep -o 'digest [0-9a-f]*' "$out/b$pair.log" || true)
  [ "$da" = "$db" ] || echo "pair $pair: the digests differ"
done
