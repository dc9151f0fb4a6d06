#!/usr/bin/env python3
"""Telemetry benchmark (issue #3): CRDT dissemination on loopback clusters.

For each cluster size N it starts N `shoal agent` processes on loopback
(3 seeds, `[acl] enabled = false`, default `[membership]`, `[telemetry]`
as chosen) and measures:

* steady state, nobody polling: per-agent bytes and packets per second from
  the agents' own /metrics counters (SWIM datagrams out/in, membership stream
  bytes, telemetry deltas and versions), CPU (utime+stime from /proc) and RSS;
* visibility: `PUT /v1/agent/telemetry` on a random agent with a fresh qps
  value, then poll `GET /v1/telemetry?node=ID` on every agent until each
  shows it. Times are taken "from PUT" and "from publication" (when the
  source agent's own record first holds the value), each both as the poll
  answer time and, more precisely, as answer time minus the record's
  `age_ms` (how long that agent has held that version).

Runs a cluster per (configuration, N): `default` (refresh 2 s, anti-entropy
10 s), `fast` (refresh 500 ms) and `idle` (refresh 1 h: after the first
record nothing is refreshed, so the window measures SWIM + push-pull +
anti-entropy digests without telemetry updates).

Python 3 standard library only; builds nothing. Every child is killed on exit
(atexit, SIGINT/SIGTERM/SIGHUP, and PR_SET_PDEATHSIG if this script dies).
The agents run as a copy of the binary under a neutral name, so someone
else's `pkill shoal` cannot end the run.
"""

import argparse
import atexit
import concurrent.futures
import ctypes
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
SEEDS = 3
HTTP_TIMEOUT_S = 2.0
NODES_MAX = 400
BIN_NAME = "bench-agent-t"

# ---------------------------------------------------------------- processes

_children = []
_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # Runs in the child between fork and exec: SIGKILL it if we die.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(argv, log_path):
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    _children.append(proc)
    return proc


def kill_all_children():
    for proc in _children:
        if proc.poll() is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
    for proc in _children:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    _children.clear()


def _on_signal(signum, _frame):
    log(f"signal {signum}: stopping every agent")
    sys.exit(128 + signum)  # runs atexit


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def loopback_tx_bytes():
    """Bytes sent on `lo` in this network namespace (every process in it)."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    return None


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


T0 = time.monotonic()


def log(message):
    print(f"[{time.monotonic() - T0:7.1f}s] {message}", flush=True)


def port_free(port):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            sock.close()
    return True


def run_quiet(argv):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} failed:\n{result.stdout}{result.stderr}")


def stats_of(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return {"n": 0}
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    return {"n": len(values), "median": statistics.median(values), "p90": p90,
            "min": values[0], "max": values[-1]}


# ------------------------------------------------------------------- HTTP


class Client:
    """One persistent HTTP/1.1 connection to one agent; used by one thread
    at a time (each poll round asks each agent once)."""

    def __init__(self, addr):
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.conn = None

    def request(self, method, path, body=None):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT_S)
                headers = {"Content-Type": "application/json"} if body is not None else {}
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, data
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def get_json(self, path):
        status, data = self.request("GET", path)
        if status != 200:
            return None
        return json.loads(data)

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def parse_metrics(text):
    """Prometheus text → {name{labels}: value} (labels as printed)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


# ---------------------------------------------------------------- cluster


class AgentsExited(Exception):
    pass


class Cluster:
    """N shoal agents on loopback; certificates are shared by all clusters
    of a run (made once with the real `shoal tls` verbs)."""

    def __init__(self, binary, n, workdir, tls_dir, label, quic_base, http_base, telemetry_toml):
        self.binary = binary
        self.n = n
        self.label = label
        self.dir = os.path.join(workdir, label)
        self.tls_dir = tls_dir
        self.names = [f"node-{i + 1}" for i in range(n)]
        self.quic = [quic_base + i for i in range(n)]
        self.http = [f"127.0.0.1:{http_base + i}" for i in range(n)]
        self.clients = [Client(addr) for addr in self.http]
        self.procs = [None] * n
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(n, 48))
        seeds = ", ".join(f'"127.0.0.1:{self.quic[i]}"' for i in range(SEEDS))
        for i, name in enumerate(self.names):
            node_dir = os.path.join(self.dir, name)
            os.makedirs(node_dir, exist_ok=True)
            role = "seed" if i < SEEDS else "member"
            cert = os.path.join(tls_dir, name)
            text = (
                f"# shoal telemetry benchmark node {i + 1} (bench/telemetry/run.py)\n"
                f'node_id = "{name}"\nrole = "{role}"\ndata_dir = "data"\n'
                f'[labels]\nregion = "local"\nzone = "zone-{i % 3 + 1}"\n'
                f'[cluster]\nname = "bench"\nlisten = "127.0.0.1:{self.quic[i]}"\n'
                f"seeds = [{seeds}]\nbootstrap_expect = {SEEDS}\n"
                f'[tls]\nca = "{tls_dir}/ca/ca.pem"\ncert = "{cert}/{name}.pem"\n'
                f'key = "{cert}/{name}-key.pem"\n'
                f'[http]\nlisten = "{self.http[i]}"\n'
                f"[acl]\nenabled = false\n"
                f"[telemetry]\n{telemetry_toml}"
            )
            with open(os.path.join(node_dir, "shoal.toml"), "w") as f:
                f.write(text)

    def start_all(self):
        for i in range(self.n):
            node_dir = os.path.join(self.dir, self.names[i])
            self.procs[i] = spawn([self.binary, "agent", "-c", os.path.join(node_dir, "shoal.toml")],
                                  os.path.join(node_dir, "agent.log"))

    def stop(self):
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for client in self.clients:
            client.close()
        self.pool.shutdown(wait=True)

    def check_alive(self):
        gone = [(self.names[i], p.returncode) for i, p in enumerate(self.procs)
                if p is not None and p.poll() is not None]
        if gone:
            raise AgentsExited(f"{self.label}: agents exited unexpectedly (name, exit code): {gone}")

    def ask_all(self, indices, method, path, body=None):
        """Sends the same request to every agent in `indices` at once;
        returns {i: (t_answer, status, bytes) or (t_answer, None, None)}."""

        def one(i):
            try:
                status, data = self.clients[i].request(method, path, body)
            except Exception:
                status, data = None, None
            return i, time.monotonic(), status, data

        out = {}
        for future in [self.pool.submit(one, i) for i in indices]:
            i, at, status, data = future.result()
            out[i] = (at, status, data)
        return out

    def wait_until(self, predicate, path, timeout_s, period_s=0.2):
        """Polls `path` on every agent until predicate(json) holds at each;
        returns seconds waited or None."""
        start = time.monotonic()
        pending = set(range(self.n))
        while time.monotonic() < start + timeout_s:
            round_start = time.monotonic()
            for i, (_, status, data) in self.ask_all(sorted(pending), "GET", path).items():
                if status == 200 and predicate(json.loads(data)):
                    pending.discard(i)
            if not pending:
                return time.monotonic() - start
            time.sleep(max(0.0, period_s - (time.monotonic() - round_start)))
        return None

    def members_converged(self, rows):
        alive = {row["node_id"] for row in rows if row["state"] == "alive"}
        return len(rows) == self.n and alive == set(self.names)

    def telemetry_converged(self, records):
        return set(records) == set(self.names)

    def metrics(self):
        answers = self.ask_all(range(self.n), "GET", "/metrics")
        return [parse_metrics(data.decode()) if status == 200 else None
                for (_, status, data) in (answers[i] for i in range(self.n))]


# ---------------------------------------------------------------- phases

WINDOW_COUNTERS = {
    "swim_bytes_out": 'shoal_swim_bytes_total{direction="out"}',
    "swim_bytes_in": 'shoal_swim_bytes_total{direction="in"}',
    "swim_packets_out": 'shoal_swim_packets_total{direction="out"}',
    "swim_packets_in": 'shoal_swim_packets_total{direction="in"}',
    "stream_bytes": "shoal_membership_stream_bytes_total",
    "push_pulls": "shoal_swim_push_pulls_total",
    "deltas_sent": "shoal_telemetry_deltas_sent_total",
    "deltas_dropped_for_size": "shoal_telemetry_deltas_dropped_for_size_total",
    "versions_received": "shoal_telemetry_versions_received_total",
    "versions_sent": "shoal_telemetry_versions_sent_total",
    "local_versions": "shoal_telemetry_local_versions_total",
    "anti_entropy_messages": "shoal_telemetry_anti_entropy_messages_total",
    "timers_late": "shoal_swim_timers_late_total",
    "suspicions": "shoal_swim_suspicions_total",
}


def database_report(qps, shards):
    report = {"qps": qps, "latency_p50_us": 450, "latency_p99_us": 2100, "replication_lag_ms": 12}
    if shards:
        report["shards"] = {str(100 + s): {"size_bytes": 1 << 30, "qps": round(qps / shards, 3),
                                           "applied_position": 123456 + s, "role": "primary" if s % 3 == 0 else "secondary",
                                           "epoch": 7} for s in range(shards)}
    return report


def measure_window(cluster, window_s):
    """Counters, CPU and RSS over a quiet window (nobody polls the agents)."""
    before = cluster.metrics()
    cpu_before = [cpu_ticks(p.pid) for p in cluster.procs]
    lo_before = loopback_tx_bytes()
    t_start = time.monotonic()
    time.sleep(window_s)
    cpu_after = [cpu_ticks(p.pid) for p in cluster.procs]
    elapsed = time.monotonic() - t_start
    lo_after = loopback_tx_bytes()
    after = cluster.metrics()
    rss_mib = [rss_kib(p.pid) / 1024 for p in cluster.procs]
    per_agent = {key: [] for key in WINDOW_COUNTERS}
    for b, a in zip(before, after):
        if b is None or a is None:
            continue
        for key, metric in WINDOW_COUNTERS.items():
            per_agent[key].append((a.get(metric, 0) - b.get(metric, 0)) / elapsed)
    cpu_percent = [(a - b) / CLK_TCK / elapsed * 100 for a, b in zip(cpu_after, cpu_before)]
    out = {"window_s": elapsed, "agents_read": len(per_agent["swim_bytes_out"])}
    for key, values in per_agent.items():
        out[key + "_per_s"] = stats_of(values)
    out["cpu_percent"] = stats_of(cpu_percent)
    out["cpu_percent_total"] = sum(cpu_percent)
    out["rss_mib"] = stats_of(rss_mib)
    if lo_before is not None and lo_after is not None:
        out["loopback_tx_bytes_per_s_all_processes"] = (lo_after - lo_before) / elapsed
    out["telemetry_records_min"] = min((m.get("shoal_telemetry_records", 0) for m in after if m), default=0)
    # Staleness at the end of the window: how long since each agent last
    # received a newer version of each other node's record.
    ages = [value for i, m in enumerate(after) if m
            for key, value in m.items()
            if key.startswith("shoal_telemetry_age_seconds{") and f'node="{cluster.names[i]}"' not in key]
    out["record_age_s"] = stats_of(ages)
    out["members_alive_min"] = min((m.get('shoal_members{state="alive"}', 0) for m in after if m), default=0)
    return out


def measure_visibility(cluster, source, value, shards, poll_s, timeout_s):
    """PUT a fresh qps at `source`; poll every agent until it shows it."""
    name = cluster.names[source]
    path = f"/v1/telemetry?node={name}"
    body = json.dumps(database_report(value, shards)).encode()
    t_put = time.monotonic()
    status, data = cluster.clients[source].request("PUT", "/v1/agent/telemetry", body)
    t_put_done = time.monotonic()
    if status != 200:
        raise RuntimeError(f"PUT /v1/agent/telemetry at {name}: {status} {data[:200]!r}")
    seen_poll = {}      # i -> answer time of the first poll showing the value
    seen_precise = {}   # i -> answer time - age_ms of the version showing the value
    published = None    # (version, t_poll, t_precise) from the source's own view
    newer_version_seen = 0
    rounds = []
    pending = set(range(cluster.n))
    while pending and time.monotonic() < t_put + timeout_s:
        round_start = time.monotonic()
        answers = cluster.ask_all(sorted(pending | ({source} if published is None else set())), "GET", path)
        # The source first, so the published version is known for the others.
        for i in [source] + [j for j in answers if j != source]:
            if i not in answers:
                continue
            at, status, data = answers[i]
            if status != 200:
                continue
            record = json.loads(data)
            report = (record.get("database") or {}).get("report") or {}
            if report.get("qps") != value:
                continue
            version = (record["version"]["generation"], record["version"]["sequence"])
            age_s = (record.get("age_ms") or 0) / 1000
            if i == source and published is None:
                published = (version, at, at - age_s)
            if i in pending:
                pending.discard(i)
                seen_poll[i] = at
                # When it got the version it shows. If that is a later version
                # than the published one (the next refresh overtook it), the
                # value was first visible at most one poll period earlier:
                # the previous poll did not show it.
                seen_precise[i] = at - age_s
                if published is not None and version != published[0]:
                    newer_version_seen += 1
        rounds.append(time.monotonic() - round_start)
        time.sleep(max(0.0, poll_s - (time.monotonic() - round_start)))
    result = {
        "source": name, "value": value, "agents": cluster.n, "agents_seen": len(seen_poll),
        "put_rtt_s": t_put_done - t_put, "poll_round_s_median": statistics.median(rounds) if rounds else None,
        "poll_rounds": len(rounds), "newer_version_first_seen": newer_version_seen,
    }
    complete = not pending
    if published is not None:
        result["published_version"] = list(published[0])
        result["put_to_publication_s"] = published[2] - t_put
    if complete:
        result["all_from_put_poll_s"] = max(seen_poll.values()) - t_put
        if published is not None:
            result["all_from_publication_poll_s"] = max(seen_poll.values()) - published[1]
        if len(seen_precise) == cluster.n and published is not None:
            result["all_from_put_s"] = max(seen_precise.values()) - t_put
            result["all_from_publication_s"] = max(seen_precise.values()) - published[2]
            others = sorted(t - published[2] for i, t in seen_precise.items() if i != source)
            result["median_agent_from_publication_s"] = statistics.median(others) if others else None
    return result


def run_cluster(args, binary, workdir, tls_dir, config_name, telemetry_toml, n, rng, visibility):
    label = f"{config_name}-n{n}"
    cluster = Cluster(binary, n, workdir, tls_dir, label, args.base_port, args.base_port + 1000, telemetry_toml)
    out = {"config": config_name, "nodes": n, "telemetry_toml": telemetry_toml.strip(),
           "loadavg_before": loadavg()}
    try:
        t_start = time.monotonic()
        cluster.start_all()
        members_s = cluster.wait_until(cluster.members_converged, "/v1/members", args.converge_timeout)
        out["members_converged_s"] = members_s
        if members_s is None:
            log(f"{label}: members did NOT converge within {args.converge_timeout}s")
            out["keeps_up"] = False
            return out
        # Every agent gets a database report (so records look like a
        # database's), then waits until every agent holds every record.
        answers = cluster.ask_all(range(n), "PUT", "/v1/agent/telemetry",
                                  json.dumps(database_report(1000.0, args.shards)).encode())
        bad = [(cluster.names[i], status, (data or b"")[:200]) for i, (_, status, data) in answers.items()
               if status != 200]
        if bad:
            raise RuntimeError(f"{label}: PUT /v1/agent/telemetry refused: {bad}")
        telemetry_s = cluster.wait_until(cluster.telemetry_converged, "/v1/telemetry", args.converge_timeout)
        out["telemetry_converged_s"] = None if telemetry_s is None else time.monotonic() - t_start
        log(f"{label}: members converged {members_s:.2f}s, every record everywhere "
            f"{'n/a' if telemetry_s is None else f'{time.monotonic() - t_start:.2f}s'} after start")
        time.sleep(args.settle)
        # The size of one record as JSON (the wire form is MessagePack, smaller),
        # after the settle so it holds the database report.
        sample = cluster.clients[0].get_json(f"/v1/telemetry?node={cluster.names[0]}")
        out["record_json_bytes"] = len(json.dumps(sample)) if sample else None
        cluster.check_alive()
        out["window"] = measure_window(cluster, args.window)
        cluster.check_alive()
        w = out["window"]
        log(f"{label}: per agent SWIM out {w['swim_bytes_out_per_s']['median']:.0f} B/s median "
            f"({w['swim_bytes_out_per_s']['max']:.0f} max), {w['swim_packets_out_per_s']['median']:.1f} pkt/s; "
            f"streams {w['stream_bytes_per_s']['median']:.0f} B/s; deltas sent "
            f"{w['deltas_sent_per_s']['median']:.2f}/s, versions received {w['versions_received_per_s']['median']:.2f}/s; "
            f"CPU {w['cpu_percent']['median']:.1f}% (total {w['cpu_percent_total']:.0f}%), "
            f"RSS {w['rss_mib']['median']:.1f} MiB; timers late {w['timers_late_per_s']['max'] * w['window_s']:.0f} max; "
            f"record age median {w['record_age_s'].get('median', 0):.2f}s, max {w['record_age_s'].get('max', 0):.2f}s")
        if visibility:
            reps = []
            for rep in range(args.updates):
                source = rng.randrange(n)
                # A material change (agents broadcast only changes of more
                # than 10 %; smaller ones wait for the heartbeat and travel by
                # anti-entropy): every value is 1.5-3x the last one's range.
                value = round(rng.uniform(1e6, 2e6) * (3.0 ** rep), 3)
                result = measure_visibility(cluster, source, value, args.shards, args.poll, args.visibility_timeout)
                reps.append(result)
                log(f"{label}: update {rep + 1} at {result['source']}: published "
                    f"{fmt(result.get('put_to_publication_s'))} after PUT; all {n} "
                    f"{fmt(result.get('all_from_publication_s'))} after publication "
                    f"(poll {fmt(result.get('all_from_publication_poll_s'))}), "
                    f"{fmt(result.get('all_from_put_s'))} after PUT; "
                    f"poll round {fmt(result['poll_round_s_median'])}")
                time.sleep(rng.uniform(0.2, 1.0))  # de-phase from the refresh timers
            out["visibility_runs"] = reps
            out["visibility"] = {
                key: stats_of([r.get(key) for r in reps])
                for key in ("all_from_put_s", "all_from_publication_s", "all_from_put_poll_s",
                            "all_from_publication_poll_s", "put_to_publication_s",
                            "median_agent_from_publication_s", "poll_round_s_median")
            }
            out["visibility"]["incomplete"] = sum(1 for r in reps if r["agents_seen"] < n)
        cluster.check_alive()
        final = cluster.metrics()
        out["members_alive_min_end"] = min((m.get('shoal_members{state="alive"}', 0) for m in final if m), default=0)
        out["keeps_up"] = keeps_up(out, n)
        return out
    finally:
        out["loadavg_after"] = loadavg()
        cluster.stop()


def keeps_up(out, n):
    """The cluster keeps up if it converged, every update reached everyone,
    and nobody lost sight of anybody."""
    if out.get("members_converged_s") is None or out.get("telemetry_converged_s") is None:
        return False
    if out.get("visibility", {}).get("incomplete"):
        return False
    if out.get("members_alive_min_end", n) < n or out["window"].get("members_alive_min", n) < n:
        return False
    return True


def fmt(seconds):
    return "n/a" if seconds is None else f"{seconds:.2f}s"


# -------------------------------------------------------------------- main

CONFIGS = {
    "default": "",
    "fast": 'refresh_interval = "500ms"\n',
    "idle": 'refresh_interval = "1h"\n',
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shoal", default="target/release/shoal", help="the shoal binary (built beforehand)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20, 40, 60],
                        help="cluster sizes for the default configuration, ascending")
    parser.add_argument("--idle-sizes", type=int, nargs="*", default=[5, 20, 40],
                        help="sizes for the idle configuration (refresh 1 h): window only")
    parser.add_argument("--fast-sizes", type=int, nargs="*", default=[20, 40],
                        help="sizes for refresh_interval = 500ms")
    parser.add_argument("--updates", type=int, default=10, help="visibility measurements per cluster")
    parser.add_argument("--window", type=float, default=30, help="steady-state window (s)")
    parser.add_argument("--settle", type=float, default=8, help="seconds between convergence and the window")
    parser.add_argument("--poll", type=float, default=0.1, help="visibility poll period (s)")
    parser.add_argument("--shards", type=int, default=4, help="shards in every agent's database report")
    parser.add_argument("--converge-timeout", type=float, default=60)
    parser.add_argument("--visibility-timeout", type=float, default=30)
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (sources and values)")
    parser.add_argument("--base-port", type=int, default=23400, help="QUIC base+i, HTTP base+1000+i")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    all_sizes = args.sizes + args.idle_sizes + args.fast_sizes
    if min(all_sizes) < SEEDS + 1 or max(all_sizes) > NODES_MAX:
        sys.exit(f"sizes must be {SEEDS + 1} to {NODES_MAX}")
    if not (os.path.isfile(args.shoal) and os.access(args.shoal, os.X_OK)):
        sys.exit(f"error: no shoal binary at {args.shoal}; build one, e.g.\n"
                 "  CARGO_TARGET_DIR=/tmp/target-bench cargo build --release -p shoal-agent\n"
                 "and pass --shoal /tmp/target-bench/release/shoal")
    n_max = max(all_sizes)
    busy = [p for k in range(2) for p in range(args.base_port + k * 1000, args.base_port + k * 1000 + n_max)
            if not port_free(p)]
    if busy:
        sys.exit(f"error: ports in use: {busy[:10]}...; pick another --base-port")

    atexit.register(kill_all_children)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)

    seed = args.seed if args.seed is not None else random.randrange(2**31)
    rng = random.Random(seed)
    workdir = args.workdir or tempfile.mkdtemp(prefix="shoal-bench-telemetry-")
    os.makedirs(workdir, exist_ok=True)
    if not args.keep and args.workdir is None:
        atexit.register(shutil.rmtree, workdir, True)
    bin_dir = os.path.join(workdir, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    binary = os.path.join(bin_dir, BIN_NAME)
    shutil.copy2(args.shoal, binary)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    log(f"{version}; sizes {args.sizes}, idle {args.idle_sizes}, fast {args.fast_sizes}; seed {seed}; "
        f"workdir {workdir}")

    # One CA and one certificate per node name, shared by every cluster.
    tls_dir = os.path.join(workdir, "tls")
    run_quiet([binary, "tls", "ca", "create", "--out", os.path.join(tls_dir, "ca")])
    for i in range(n_max):
        name = f"node-{i + 1}"
        run_quiet([binary, "tls", "cert", "create", "--ca", os.path.join(tls_dir, "ca"), "--node-id", name,
                   "--ip", "127.0.0.1", "--dns", "localhost", "--out", os.path.join(tls_dir, name)])

    results = {"seed": seed, "shoal_version": version, "nproc": os.cpu_count(),
               "loadavg_start": loadavg(), "args": {k: v for k, v in vars(args).items() if k not in ("workdir", "out")},
               "clusters": []}

    def save():
        results["wall_s"] = time.monotonic() - T0
        results["loadavg_end"] = loadavg()
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1, sort_keys=True)

    plan = [("default", n, True) for n in args.sizes]
    plan += [("idle", n, False) for n in args.idle_sizes]
    plan += [("fast", n, True) for n in args.fast_sizes]
    gave_up = set()
    try:
        for config_name, n, visibility in plan:
            if config_name in gave_up:
                log(f"{config_name}-n{n}: skipped (a smaller cluster of this configuration did not keep up)")
                continue
            out = run_cluster(args, binary, workdir, tls_dir, config_name, CONFIGS[config_name], n, rng, visibility)
            results["clusters"].append(out)
            save()
            if not out.get("keeps_up"):
                log(f"{config_name}-n{n}: the cluster did NOT keep up; larger sizes of {config_name} skipped")
                gave_up.add(config_name)
    except AgentsExited as error:
        log(f"error: {error}")
        results["error"] = str(error)
    save()
    if args.out:
        log(f"wrote {args.out}")
    print_report(results)
    if "error" in results:
        sys.exit(1)


def print_report(results):
    print("\n=== telemetry benchmark ===")
    print(f"{'cluster':<12} {'keeps':>5} {'all<-pub med/p90/max s':>24} {'all<-PUT med/p90/max s':>24} "
          f"{'SWIM out B/s med/max':>21} {'pkt/s':>6} {'stream B/s':>11} {'vers rx/s':>9} {'CPU %':>6} {'RSS MiB':>8} "
          f"{'age med/max s':>14}")
    for c in results["clusters"]:
        w = c.get("window")
        v = c.get("visibility", {})

        def trio(key):
            s = v.get(key, {})
            return "-" if not s.get("n") else f"{s['median']:.2f}/{s['p90']:.2f}/{s['max']:.2f}"

        if w is None:
            print(f"{c['config'] + '-n' + str(c['nodes']):<12} {str(c.get('keeps_up')):>5}  (no window)")
            continue
        print(f"{c['config'] + '-n' + str(c['nodes']):<12} {str(c.get('keeps_up')):>5} "
              f"{trio('all_from_publication_s'):>24} {trio('all_from_put_s'):>24} "
              f"{w['swim_bytes_out_per_s']['median']:>10.0f}/{w['swim_bytes_out_per_s']['max']:<10.0f} "
              f"{w['swim_packets_out_per_s']['median']:>6.1f} {w['stream_bytes_per_s']['median']:>11.0f} "
              f"{w['versions_received_per_s']['median']:>9.2f} {w['cpu_percent']['median']:>6.2f} "
              f"{w['rss_mib']['median']:>8.1f} "
              f"{w['record_age_s'].get('median', 0):>6.2f}/{w['record_age_s'].get('max', 0):<6.2f}")
    print(f"wall time {results['wall_s']:.0f}s; load average start {results['loadavg_start']} "
          f"end {results['loadavg_end']}")


if __name__ == "__main__":
    main()
