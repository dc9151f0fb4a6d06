#!/usr/bin/env bash
# A profile-guided build of shoal-sim: the build the simulator's speed is
# measured with in BENCHMARKS.md (simulator, eighteenth round on).
#
#   bench/simulator/pgo.sh [OUT]
#
# Builds an instrumented shoal-sim, runs it over a training set of shipped
# scenarios (smaller and shorter than the benchmark runs, so the profile is
# not of the measured run itself), merges the profiles and builds again with
# them. Writes the binary to OUT (default target/pgo/shoal-sim). Behaviour is
# the same as `cargo build --release`: same digests. Needs rustup's
# `llvm-tools` component (added here) for llvm-profdata; takes about twice a
# release build.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/pgo/shoal-sim}
work=target/pgo-work
rm -rf "$work"
mkdir -p "$work/profiles" "$(dirname "$out")"

rustup component add llvm-tools >/dev/null
profdata="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/llvm-profdata"

echo "== instrumented build"
RUSTFLAGS="-Cprofile-generate=$PWD/$work/profiles" CARGO_TARGET_DIR="$work/gen" \
  cargo build --release --locked -p shoal-simulator

echo "== training runs"
sim="$work/gen/release/shoal-sim"
train() { # SCENARIO [options...]
  local scenario=$1
  shift
  echo "$scenario $*"
  "$sim" run "simulator/scenarios/$scenario.toml" "$@" --out "$work/runs/$scenario" \
    > "$work/runs.log" 2>&1 || { cat "$work/runs.log"; exit 1; }
}
train steady_1000 --nodes 700 --duration 150s
train churn_1000 --nodes 200 --duration 120s
train zone_failure
train majority_partition_leader
train stalled_under_loss
train rolling_restart

echo "== optimized build"
"$profdata" merge -o "$work/merged.profdata" "$work/profiles"
RUSTFLAGS="-Cprofile-use=$PWD/$work/merged.profdata" CARGO_TARGET_DIR="$work/use" \
  cargo build --release --locked -p shoal-simulator
cp "$work/use/release/shoal-sim" "$out"
echo "wrote $out"
