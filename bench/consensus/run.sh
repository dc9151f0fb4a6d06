#!/usr/bin/env bash
# The consensus benchmark of issue #4: control writes (PUT /v1/config/{key},
# 16-byte values) on a 3-seed Shoal cluster on loopback, fsync on, against a
# 3-member etcd cluster on loopback doing the same puts through its v3
# HTTP/JSON gateway, in the same run. See README.md beside this file.
#
# Usage: bench/consensus/run.sh            (from anywhere; ~6 minutes)
# Knobs (environment):
#   CLIENTS="1 16 64 256"   concurrent closed-loop clients per step
#   WARMUP_S=2 DURATION_S=10  per step
#   TARGETS="shoal-leader shoal-follower shoal-member etcd-leader etcd-follower"
#   OUT=bench/consensus/results/latest      where results go
#   CARGO_TARGET_DIR=/tmp/target-bench      where shoal and the loadgen build
#   BASE_PORT=27400                          Shoal QUIC ports from here, HTTP +100,
#                                            etcd client/peer ports from +1000
#   SHOAL_REV=HEAD                           build a clean export of this commit
#   KEEP=1                                   keep the temporary data dirs
#   PERF=1                                   also record a perf profile of the
#                                            Shoal leader at the largest client count
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CLIENTS="${CLIENTS:-1 16 64 256}"
WARMUP_S="${WARMUP_S:-2}"
DURATION_S="${DURATION_S:-10}"
TARGETS="${TARGETS:-shoal-leader shoal-follower shoal-member etcd-leader etcd-follower}"
OUT="${OUT:-$HERE/results/latest}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/target-bench}"
BASE_PORT="${BASE_PORT:-27400}"
READY_TIMEOUT_S=90

# ----- prerequisites -----

for tool in etcd etcdctl curl python3; do
    if ! command -v "$tool" >/dev/null; then
        echo "missing $tool; install it with:" >&2
        echo "  apt-get update && apt-get install -y etcd-server etcd-client curl python3" >&2
        exit 1
    fi
done

WORK="$(mktemp -d /tmp/shoal-consensus-bench.XXXXXX)"

# Every process this script starts is recorded here and ended by pid.
PIDS=()
cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT INT TERM

# SHOAL_REV=REV builds a clean export of that commit (others' uncommitted edits in
# the work tree then do not leak into the numbers); by default the work tree.
SRC="$REPO"
if [ -n "${SHOAL_REV:-}" ]; then
    SRC="$WORK/src"
    mkdir -p "$SRC"
    git -C "$REPO" archive "$SHOAL_REV" | tar -x -C "$SRC"
fi
echo "== building shoal ($SRC) and the load generator (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
if [ -n "${SHOAL_REV:-}" ]; then
    # A target dir of its own, so the export's binary does not replace the work
    # tree's in the shared one; seeded from it (dependencies stay built).
    if [ ! -d "$CARGO_TARGET_DIR-rev" ] && [ -d "$CARGO_TARGET_DIR" ]; then
        cp -a "$CARGO_TARGET_DIR" "$CARGO_TARGET_DIR-rev"
    fi
    (cd "$SRC" && CARGO_TARGET_DIR="$CARGO_TARGET_DIR-rev" cargo build --release -q -p shoal-agent)
    mkdir -p "$WORK/bin"
    cp "$CARGO_TARGET_DIR-rev/release/shoal" "$WORK/bin/"
else
    (cd "$SRC" && cargo build --release -q -p shoal-agent)
    mkdir -p "$WORK/bin"
    cp "$CARGO_TARGET_DIR/release/shoal" "$WORK/bin/"
fi
(cd "$HERE/loadgen" && cargo build --release -q)
# Private copies: another build in the same target dir cannot swap them mid-run.
cp "$CARGO_TARGET_DIR/release/consensus-loadgen" "$WORK/bin/"
SHOAL="$WORK/bin/shoal"
LOADGEN="$WORK/bin/consensus-loadgen"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"


# ----- the machine -----

{
    echo "date: $(date -u +%FT%TZ)"
    if [ -n "${SHOAL_REV:-}" ]; then
        echo "shoal: $(git -C "$REPO" rev-parse --short "$SHOAL_REV") (clean export)"
    else
        echo "shoal: work tree at $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- agent consensus membership || echo ' (with uncommitted changes)')"
    fi
    echo "cpus: $(nproc)  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "memory: $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
    echo "kernel: $(uname -r)"
    echo "filesystem of $WORK: $(df -T "$WORK" | awk 'NR==2 {print $2 " on " $1}')"
    echo "etcd: $(etcd --version | head -1)"
    echo "rustc: $(rustc --version)"
    # fsync cost: 500 sequential 4 KiB writes, each synced (O_DSYNC).
    dd_out="$(dd if=/dev/zero of="$WORK/fsync-probe" bs=4k count=500 oflag=dsync 2>&1 | tail -1)"
    dd_s="$(echo "$dd_out" | sed -E 's/.* copied, ([0-9.]+) s.*/\1/')"
    echo "dd 500 x 4 KiB O_DSYNC: $dd_out"
    echo "fsync-probe: $(awk -v s="$dd_s" 'BEGIN {printf "%.3f ms per synced 4 KiB write", s * 1000 / 500}')"
    rm -f "$WORK/fsync-probe"
} | tee "$OUT/machine.txt"

# ----- Shoal: 3 seeds + 1 member -----

echo "== starting Shoal (3 seeds + 1 member) in $WORK/shoal"
N_SHOAL=4
N_SEEDS=3
quic_port() { echo $((BASE_PORT + $1 - 1)); }
http_port() { echo $((BASE_PORT + 100 + $1 - 1)); }
mkdir -p "$WORK/shoal/tls"
"$SHOAL" tls ca create --out "$WORK/shoal/tls" >/dev/null
seed_list=""
for i in $(seq 1 $N_SEEDS); do
    seed_list="$seed_list${seed_list:+, }\"127.0.0.1:$(quic_port "$i")\""
done
for i in $(seq 1 $N_SHOAL); do
    dir="$WORK/shoal/node-$i"
    mkdir -p "$dir"
    "$SHOAL" tls cert create --ca "$WORK/shoal/tls" --node-id "node-$i" \
        --ip 127.0.0.1 --dns localhost --out "$dir" >/dev/null
    role=member
    [ "$i" -le $N_SEEDS ] && role=seed
    cat > "$dir/shoal.toml" <<EOF
node_id = "node-$i"
role = "$role"
data_dir = "data"
[labels]
region = "local"
zone = "zone-$(( (i - 1) % 3 + 1 ))"
[cluster]
name = "bench"
listen = "127.0.0.1:$(quic_port "$i")"
seeds = [$seed_list]
bootstrap_expect = $N_SEEDS
[tls]
ca = "../tls/ca.pem"
cert = "node-$i.pem"
key = "node-$i-key.pem"
[http]
listen = "127.0.0.1:$(http_port "$i")"
[acl]
enabled = false
EOF
    "$SHOAL" agent -c "$dir/shoal.toml" > "$dir/agent.log" 2>&1 &
    PIDS+=($!)
    echo "  node-$i ($role) http 127.0.0.1:$(http_port "$i") pid $!"
done

# The leader, from any seed's view; empty until there is one.
shoal_leader() {
    curl -sf "http://127.0.0.1:$(http_port 1)/v1/seeds" 2>/dev/null |
        sed -nE 's/.*"leader":"([^"]*)".*/\1/p'
}
deadline=$((SECONDS + READY_TIMEOUT_S))
until [ -n "$(shoal_leader)" ]; do
    [ $SECONDS -lt $deadline ] || { echo "no Shoal leader after ${READY_TIMEOUT_S}s" >&2; exit 1; }
    sleep 0.5
done
# Every agent must take a write (the member forwards it) before we measure.
for i in $(seq 1 $N_SHOAL); do
    until curl -sf -X PUT -H 'content-type: application/json' -d '{"value":"ready"}' \
        "http://127.0.0.1:$(http_port "$i")/v1/config/bench-ready" >/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "node-$i takes no writes after ${READY_TIMEOUT_S}s" >&2; exit 1; }
        sleep 0.5
    done
done
LEADER="$(shoal_leader)"
LEADER_N="${LEADER#node-}"
FOLLOWER_N=1
[ "$FOLLOWER_N" = "$LEADER_N" ] && FOLLOWER_N=2
MEMBER_N=4
echo "  leader node-$LEADER_N, follower seed node-$FOLLOWER_N, member node-$MEMBER_N"

# ----- etcd: 3 members -----

echo "== starting etcd (3 members) in $WORK/etcd"
etcd_client_port() { echo $((BASE_PORT + 1000 + 2 * ($1 - 1))); }
etcd_peer_port() { echo $((BASE_PORT + 1001 + 2 * ($1 - 1))); }
cluster=""
for i in 1 2 3; do
    cluster="$cluster${cluster:+,}e$i=http://127.0.0.1:$(etcd_peer_port "$i")"
done
for i in 1 2 3; do
    mkdir -p "$WORK/etcd/e$i"
    etcd --name "e$i" --data-dir "$WORK/etcd/e$i/data" \
        --listen-client-urls "http://127.0.0.1:$(etcd_client_port "$i")" \
        --advertise-client-urls "http://127.0.0.1:$(etcd_client_port "$i")" \
        --listen-peer-urls "http://127.0.0.1:$(etcd_peer_port "$i")" \
        --initial-advertise-peer-urls "http://127.0.0.1:$(etcd_peer_port "$i")" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token shoal-bench --logger zap --log-level warn \
        > "$WORK/etcd/e$i/etcd.log" 2>&1 &
    PIDS+=($!)
    echo "  e$i client 127.0.0.1:$(etcd_client_port "$i") pid $!"
done
ETCD_ENDPOINTS="127.0.0.1:$(etcd_client_port 1),127.0.0.1:$(etcd_client_port 2),127.0.0.1:$(etcd_client_port 3)"
until ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "etcd not healthy after ${READY_TIMEOUT_S}s" >&2; exit 1; }
    sleep 0.5
done
# The leader: the endpoint whose own member id is the leader id it reports.
ETCD_LEADER_N=""
for i in 1 2 3; do
    if ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$(etcd_client_port "$i")" endpoint status -w json |
        python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; sys.exit(0 if s["header"]["member_id"] == s["leader"] else 1)'; then
        ETCD_LEADER_N=$i
    fi
done
[ -n "$ETCD_LEADER_N" ] || { echo "no etcd leader found" >&2; exit 1; }
ETCD_FOLLOWER_N=1
[ "$ETCD_FOLLOWER_N" = "$ETCD_LEADER_N" ] && ETCD_FOLLOWER_N=2
ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint status -w table | tee "$OUT/etcd-status.txt"
echo "  etcd leader e$ETCD_LEADER_N, follower e$ETCD_FOLLOWER_N"
curl -sf -X POST -d '{"key":"YmVuY2gtcmVhZHk=","value":"cmVhZHk="}' \
    "http://127.0.0.1:$(etcd_client_port "$ETCD_FOLLOWER_N")/v3/kv/put" >/dev/null ||
    { echo "the etcd v3 gateway does not answer POST /v3/kv/put" >&2; exit 1; }

# ----- the measurements -----

url_of() {
    case "$1" in
        shoal-leader) echo "http://127.0.0.1:$(http_port "$LEADER_N")" ;;
        shoal-follower) echo "http://127.0.0.1:$(http_port "$FOLLOWER_N")" ;;
        shoal-member) echo "http://127.0.0.1:$(http_port "$MEMBER_N")" ;;
        etcd-leader) echo "http://127.0.0.1:$(etcd_client_port "$ETCD_LEADER_N")" ;;
        etcd-follower) echo "http://127.0.0.1:$(etcd_client_port "$ETCD_FOLLOWER_N")" ;;
        *) echo "unknown target $1" >&2; exit 1 ;;
    esac
}

scrape_metrics() { # name
    for i in $(seq 1 $N_SHOAL); do
        curl -sf "http://127.0.0.1:$(http_port "$i")/metrics" > "$OUT/metrics-$1-node-$i.txt" 2>/dev/null || true
    done
}

echo "== measuring: clients {$CLIENTS} x targets {$TARGETS}, ${WARMUP_S}s warmup + ${DURATION_S}s each"
max_clients="$(echo "$CLIENTS" | tr ' ' '\n' | sort -n | tail -1)"
for clients in $CLIENTS; do
    for target in $TARGETS; do
        system="${target%%-*}"
        url="$(url_of "$target")"
        perf_pid=""
        if [ "${PERF:-0}" = 1 ] && [ "$target" = shoal-leader ] && [ "$clients" = "$max_clients" ] &&
            command -v perf >/dev/null; then
            leader_pid="${PIDS[$((LEADER_N - 1))]}"
            perf record -F 499 -g -p "$leader_pid" -o "$WORK/perf.data" \
                -- sleep $((WARMUP_S + DURATION_S)) > "$WORK/perf.log" 2>&1 &
            perf_pid=$!
            PIDS+=($perf_pid)
        fi
        "$LOADGEN" --system "$system" --url "$url" --clients "$clients" \
            --warmup-s "$WARMUP_S" --duration-s "$DURATION_S" --value-bytes 16 \
            --keys-per-client 8 --key-prefix "bench-" --label "$target" >> "$RESULTS"
        if [ -n "$perf_pid" ]; then
            wait "$perf_pid" || true
            perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
                head -120 > "$OUT/perf-shoal-leader-$clients.txt" || true
        fi
    done
    scrape_metrics "after-$clients"
done

# ----- diagnostics: syncs per write (not part of the numbers above) -----

# strace slows the traced process, so this runs after the measurements: it
# only counts fsync/fdatasync calls per completed write, at 16 clients.
if [ "${DIAG:-1}" = 1 ] && command -v strace >/dev/null; then
    echo "== diagnostics: fsync/fdatasync calls per write under strace (16 clients, 5 s)"
    for target in shoal-leader etcd-leader; do
        case "$target" in
            shoal-leader) pid="${PIDS[$((LEADER_N - 1))]}" ;;
            etcd-leader) pid="${PIDS[$((N_SHOAL + ETCD_LEADER_N - 1))]}" ;;
        esac
        strace -f -c -e trace=fsync,fdatasync,sync_file_range -p "$pid" -o "$OUT/strace-$target.txt" 2>/dev/null &
        strace_pid=$!
        PIDS+=($strace_pid)
        sleep 1
        line="$("$LOADGEN" --system "${target%%-*}" --url "$(url_of "$target")" --clients 16 \
            --warmup-s 0 --duration-s 5 --label "$target-strace" 2>/dev/null)"
        kill -INT "$strace_pid" 2>/dev/null || true
        wait "$strace_pid" 2>/dev/null || true
        ops="$(echo "$line" | sed -nE 's/.*"ops":([0-9]+).*/\1/p')"
        syncs="$(awk '$NF ~ /^(fsync|fdatasync|sync_file_range)$/ {n += $4} END {print n + 0}' "$OUT/strace-$target.txt")"
        echo "  $target: $ops writes, $syncs sync calls on the leader ($(awk -v s="$syncs" -v o="$ops" 'BEGIN {if (o > 0) printf "%.2f", s / o; else print "n/a"}') per write)" |
            tee -a "$OUT/diagnostics.txt"
    done
fi

# ----- the table -----

echo "== results ($RESULTS)"
python3 - "$RESULTS" <<'EOF' 2>/dev/null || cat "$RESULTS"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {(r["label"], r["clients"]): r for r in rows}
print(f'{"target":<16}{"clients":>8}{"ops/s":>10}{"p50 ms":>9}{"p99 ms":>9}{"max ms":>9}{"errors":>8}')
for r in rows:
    print(f'{r["label"]:<16}{r["clients"]:>8}{r["ops_per_s"]:>10.0f}{r["p50_ms"]:>9.2f}{r["p99_ms"]:>9.2f}{r["max_ms"]:>9.2f}{r["errors"]:>8}')
print()
print("ratios shoal-leader / etcd-leader (throughput; p99)")
for (label, clients), r in sorted(by.items(), key=lambda kv: kv[0][1]):
    if label == "shoal-leader" and ("etcd-leader", clients) in by:
        e = by[("etcd-leader", clients)]
        print(f'  {clients:>4} clients: {r["ops_per_s"] / e["ops_per_s"]:.2f}x throughput, {r["p99_ms"] / e["p99_ms"]:.2f}x p99')
EOF
for i in $(seq 1 $N_SHOAL); do
    cp "$WORK/shoal/node-$i/agent.log" "$OUT/agent-node-$i.log" 2>/dev/null || true
done
echo "done; results in $OUT"
