#!/usr/bin/env bash
# A profile-guided build of shoal-sim: the build the simulator's speed is
# measured with in BENCHMARKS.md (simulator, eighteenth round on).
#
#   bench/simulator/pgo.sh [OUT]
#
# Builds an instrumented shoal-sim, runs it over a training set of shipped
# scenarios (smaller or shorter than the benchmark runs, so the profile is
# not of the measured run itself), merges the profiles and builds again with
# them. Writes the binary to OUT (default target/pgo/shoal-sim). Behaviour is
# the same as `cargo build --release`: same digests. Needs rustup's
# `llvm-tools` component (added here) for llvm-profdata; takes about twice a
# release build. Sets RUSTFLAGS for its own builds (yours are not used).
set -euo pipefail
case ${1-} in
  -*)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
out=${1:+$(realpath -m -- "$1")}
cd "$(dirname "$0")/../.."
out=${out:-$PWD/target/pgo/shoal-sim}
work=$PWD/target/pgo-work
# A stale profile would be reused silently: start from nothing.
rm -rf "$work"
mkdir -p "$work/profiles" "$work/runs" "$(dirname "$out")"
unset CARGO_ENCODED_RUSTFLAGS

rustup component add llvm-tools >/dev/null
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"

# `--target` keeps RUSTFLAGS off build scripts and proc-macros: only the
# simulator and what it links are instrumented, and only they write profiles.
build() { # FLAGS DIR
  RUSTFLAGS=$1 CARGO_TARGET_DIR=$2 \
    cargo build --release --locked --target "$host" -p shoal-simulator
}

echo "== instrumented build"
build "-Cprofile-generate=$work/profiles" "$work/gen"

echo "== training runs"
sim="$work/gen/$host/release/shoal-sim"
train() { # SCENARIO [options...]
  local scenario=$1
  shift
  echo "$scenario $*"
  "$sim" run "simulator/scenarios/$scenario.toml" "$@" --out "$work/runs/$scenario" \
    > "$work/runs/$scenario.log" 2>&1 || { cat "$work/runs/$scenario.log"; exit 1; }
}
train steady_1000 --nodes 700 --duration 150s
train churn_1000 --nodes 200
train zone_failure
train majority_partition_leader
train stalled_under_loss
train rolling_restart
if ! compgen -G "$work/profiles/*.profraw" > /dev/null; then
  echo "pgo.sh: the training runs wrote no profile (logs in $work/runs)" >&2
  exit 1
fi

echo "== optimized build"
"$profdata" merge -o "$work/merged.profdata" "$work/profiles"
build "-Cprofile-use=$work/merged.profdata" "$work/use"
cp "$work/use/$host/release/shoal-sim" "$out"
echo "wrote $out"
