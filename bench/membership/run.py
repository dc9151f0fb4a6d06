#!/usr/bin/env python3
"""Membership benchmark (issue #2): Shoal's SWIM over QUIC against serf.

Starts a cluster of `shoal agent` processes and a cluster of `serf agent`
processes of the same size on loopback, in the same run, and measures:

* convergence: time from starting every agent of a fresh cluster until every
  agent lists all N members alive;
* steady state: CPU time (utime + stime from /proc/PID/stat) per agent per
  minute and RSS (VmRSS) per agent, with no polling during the window;
* detection: time from `kill -9` of a random non-seed node until every other
  node reports it failed/down (polled about every 100 ms across all nodes),
  repeated; the node is restarted and the cluster reconverges between kills;
* Lifeguard: `kill -STOP` one agent for a few seconds, then `kill -CONT`;
  every "down" state any observer reports for a member other than the
  stalled one is a false down. Shoal with Lifeguard on and off (fresh
  clusters of the same size), and serf for comparison.

Python 3 standard library only. Builds nothing and installs nothing: pass the
shoal binary with --shoal; if serf is missing it prints the apt-get line.
Every child process is killed on exit (atexit, SIGINT/SIGTERM, and
PR_SET_PDEATHSIG should this script itself be killed).
"""

import argparse
import atexit
import concurrent.futures
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
SEEDS = 3
POLL_TIMEOUT_S = 1.0

# ---------------------------------------------------------------- processes

_children = []
_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # Runs in the child between fork and exec: SIGKILL it if we die.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(argv, log_path):
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    _children.append(proc)
    return proc


def kill_all_children():
    for proc in _children:
        if proc.poll() is None:
            try:
                proc.kill()  # SIGKILL also ends a SIGSTOPped process
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


def stop_gracefully(procs, timeout_s=10.0):
    for proc in procs:
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        if proc is None:
            continue
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


T0 = time.monotonic()


def log(message):
    print(f"[{time.monotonic() - T0:7.1f}s] {message}", flush=True)


def port_free(port):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        sock = socket.socket(socket.AF_INET, kind)
        # Like the agents' own listeners: TIME_WAIT leftovers do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            sock.close()
    return True


# ----------------------------------------------------- serf's msgpack RPC
#
# `serf members -format=json` costs a Go process start (about 8 ms of CPU)
# per call; polling 20 agents every 100 ms that way would burn most of this
# 2-core machine and slow the very agents being measured. So the polling
# loops speak serf's RPC protocol (msgpack over TCP, the one the CLI uses)
# on one persistent connection per agent. The CLI is still used to
# cross-check the RPC answers (see SerfCluster.cross_check).


class NeedMore(Exception):
    pass


def mp_encode(obj):
    if isinstance(obj, dict):
        assert len(obj) < 16
        out = bytes([0x80 | len(obj)])
        for key, value in obj.items():
            out += mp_encode(key) + mp_encode(value)
        return out
    if isinstance(obj, str):
        data = obj.encode()
        assert len(data) < 32
        return bytes([0xA0 | len(data)]) + data
    if isinstance(obj, int):
        assert 0 <= obj < 2**32
        if obj < 128:
            return bytes([obj])
        return b"\xce" + struct.pack(">I", obj)
    raise TypeError(type(obj))


def mp_decode(buf, pos):
    """Decodes one msgpack object at buf[pos:]; returns (obj, new_pos)."""

    def need(n):
        if pos + n > len(buf):
            raise NeedMore

    need(1)
    b = buf[pos]
    pos += 1

    def take(n):
        nonlocal pos
        need(n)
        data = buf[pos : pos + n]
        pos += n
        return data

    def seq(n, as_map):
        nonlocal pos
        if as_map:
            out = {}
            for _ in range(n):
                key, pos = mp_decode(buf, pos)
                value, pos = mp_decode(buf, pos)
                if isinstance(key, bytes):
                    key = key.decode(errors="replace")
                out[key] = value
            return out
        out = []
        for _ in range(n):
            value, pos = mp_decode(buf, pos)
            out.append(value)
        return out

    if b <= 0x7F:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if 0x80 <= b <= 0x8F:
        value = seq(b & 0x0F, True)
        return value, pos
    if 0x90 <= b <= 0x9F:
        value = seq(b & 0x0F, False)
        return value, pos
    if 0xA0 <= b <= 0xBF:
        return bytes(take(b & 0x1F)).decode(errors="replace"), pos
    simple = {0xC0: None, 0xC2: False, 0xC3: True}
    if b in simple:
        return simple[b], pos
    sizes = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q", 0xCA: ">f", 0xCB: ">d"}
    if b in sizes:
        fmt = sizes[b]
        return struct.unpack(fmt, bytes(take(struct.calcsize(fmt))))[0], pos
    lengths = {0xD9: (">B", "str"), 0xDA: (">H", "str"), 0xDB: (">I", "str"), 0xC4: (">B", "bin"), 0xC5: (">H", "bin"), 0xC6: (">I", "bin"), 0xDC: (">H", "arr"), 0xDD: (">I", "arr"), 0xDE: (">H", "map"), 0xDF: (">I", "map")}
    if b in lengths:
        fmt, kind = lengths[b]
        n = struct.unpack(fmt, bytes(take(struct.calcsize(fmt))))[0]
        if kind == "str":
            return bytes(take(n)).decode(errors="replace"), pos
        if kind == "bin":
            return bytes(take(n)), pos
        value = seq(n, kind == "map")
        return value, pos
    raise ValueError(f"msgpack type 0x{b:02x} not supported")


class SerfRpc:
    """One persistent RPC connection to a serf agent."""

    def __init__(self, addr):
        self.addr = addr
        self.sock = None
        self.buf = bytearray()
        self.seq = 0

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buf = bytearray()

    def _read_obj(self, deadline):
        while True:
            try:
                obj, pos = mp_decode(self.buf, 0)
                del self.buf[:pos]
                return obj
            except NeedMore:
                pass
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("serf rpc closed")
            self.buf += chunk

    def _call(self, command, body, has_answer, deadline):
        self.seq += 1
        message = mp_encode({"Command": command, "Seq": self.seq})
        if body is not None:
            message += mp_encode(body)
        self.sock.sendall(message)
        header = self._read_obj(deadline)
        if header.get("Error"):
            raise RuntimeError(f"serf rpc {command}: {header['Error']}")
        return self._read_obj(deadline) if has_answer else None

    def members(self, timeout_s=POLL_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        try:
            if self.sock is None:
                host, port = self.addr.rsplit(":", 1)
                self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
                self._call("handshake", {"Version": 1}, False, deadline)
            return self._call("members", None, True, deadline)["Members"]
        except Exception:
            self.close()
            raise


# ----------------------------------------------------------------- clusters


class AgentsExited(Exception):
    pass


class Cluster:
    """N agents of one system on loopback. Subclasses start/stop them and
    read one agent's member list as {name: [(state, generation), ...]},
    state one of alive, suspect, down, left."""

    system = "?"

    def __init__(self, n, workdir, label):
        self.n = n
        self.dir = os.path.join(workdir, label)
        os.makedirs(self.dir, exist_ok=True)
        self.label = label
        self.names = [f"node-{i + 1}" for i in range(n)]
        self.procs = [None] * n
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=n)

    def check_alive(self):
        """Fails the run if an agent exited that the benchmark did not kill
        (a crash, or a signal from outside: the machine is shared)."""
        gone = [(self.names[i], p.returncode) for i, p in enumerate(self.procs)
                if p is not None and p.poll() is not None]
        if gone:
            raise AgentsExited(f"{self.label}: agents exited unexpectedly (name, exit code): {gone}")

    def non_seeds(self):
        return list(range(SEEDS, self.n))

    def kill9(self, i):
        os.kill(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait(timeout=10)

    def stop(self):
        stop_gracefully(self.procs)
        self.pool.shutdown(wait=True)

    def poll(self, indices):
        """Asks every agent in `indices` at once; returns {i: (t_answer, view
        or None)} with t_answer on the monotonic clock."""

        def one(i):
            try:
                view = self.view(i)
            except Exception:
                view = None
            return i, time.monotonic(), view

        futures = [self.pool.submit(one, i) for i in indices]
        out = {}
        for future in futures:
            i, at, view = future.result()
            out[i] = (at, view)
        return out

    def fully_alive(self, view, want_gen=None):
        """Whether `view` lists every node alive (and, for want_gen = (name,
        generation), that node at a newer generation)."""
        if view is None:
            return False
        for name in self.names:
            rows = view.get(name)
            if not rows or not any(state == "alive" for state, _ in rows):
                return False
            if any(state != "alive" for state, _ in rows):
                return False
        if want_gen is not None:
            name, old = want_gen
            if not all(gen is None or gen > old for _, gen in view[name]):
                return False
        return True

    def wait_converged(self, timeout_s, want_gen=None, period_s=0.1, recorder=None):
        """Polls all agents until each lists all N alive; returns seconds
        waited, or None at the deadline."""
        start = time.monotonic()
        deadline = start + timeout_s
        pending = set(range(self.n))
        while time.monotonic() < deadline:
            round_start = time.monotonic()
            answers = self.poll(sorted(pending) if recorder is None else range(self.n))
            if recorder is not None:
                recorder(answers)
            for i, (_, view) in answers.items():
                if i in pending and self.fully_alive(view, want_gen):
                    pending.discard(i)
                elif recorder is not None and i not in pending and not self.fully_alive(view, want_gen):
                    pending.add(i)
            if not pending:
                return time.monotonic() - start
            time.sleep(max(0.0, period_s - (time.monotonic() - round_start)))
        return None


class ShoalCluster(Cluster):
    system = "shoal"

    def __init__(self, binary, n, workdir, label, quic_base, http_base, lifeguard):
        super().__init__(n, workdir, label)
        self.binary = binary
        self.quic = [quic_base + i for i in range(n)]
        self.http = [f"127.0.0.1:{http_base + i}" for i in range(n)]
        self.lifeguard = lifeguard
        self.write_configs()

    def write_configs(self):
        tls = os.path.join(self.dir, "tls")
        run_quiet([self.binary, "tls", "ca", "create", "--out", tls])
        seeds = ", ".join(f'"127.0.0.1:{self.quic[i]}"' for i in range(SEEDS))
        for i, name in enumerate(self.names):
            node_dir = os.path.join(self.dir, name)
            os.makedirs(node_dir, exist_ok=True)
            run_quiet([self.binary, "tls", "cert", "create", "--ca", tls, "--node-id", name,
                       "--ip", "127.0.0.1", "--dns", "localhost", "--out", node_dir])
            role = "seed" if i < SEEDS else "member"
            text = (
                f'# shoal membership benchmark node {i + 1} (bench/membership/run.py)\n'
                f'node_id = "{name}"\nrole = "{role}"\ndata_dir = "data"\n'
                f'[labels]\nregion = "local"\nzone = "zone-{i % 3 + 1}"\n'
                f'[cluster]\nname = "bench"\nlisten = "127.0.0.1:{self.quic[i]}"\n'
                f"seeds = [{seeds}]\nbootstrap_expect = {SEEDS}\n"
                f'[tls]\nca = "../tls/ca.pem"\ncert = "{name}.pem"\nkey = "{name}-key.pem"\n'
                f'[http]\nlisten = "{self.http[i]}"\n'
                f"[membership]\nlifeguard = {'true' if self.lifeguard else 'false'}\n"
            )
            with open(os.path.join(node_dir, "shoal.toml"), "w") as f:
                f.write(text)

    def start(self, i):
        node_dir = os.path.join(self.dir, self.names[i])
        self.procs[i] = spawn([self.binary, "agent", "-c", os.path.join(node_dir, "shoal.toml")],
                              os.path.join(node_dir, "agent.log"))

    def start_all(self):
        for i in range(self.n):
            self.start(i)

    def restart(self, i):
        self.start(i)

    def view(self, i):
        with urllib.request.urlopen(f"http://{self.http[i]}/v1/members", timeout=POLL_TIMEOUT_S) as r:
            rows = json.load(r)
        view = {}
        for row in rows:
            view.setdefault(row["node_id"], []).append((row["state"], row["generation"]))
        return view

    def metrics(self, i):
        """The agent's SWIM counters, {name: value}, or {} if unreachable."""
        wanted = ("shoal_swim_suspicions_total", "shoal_swim_suspicions_expired_total",
                  "shoal_swim_self_suspected_total", "shoal_swim_timers_late_total",
                  "shoal_swim_probes_failed_total", "shoal_swim_probes_total")
        try:
            with urllib.request.urlopen(f"http://{self.http[i]}/metrics", timeout=2) as r:
                text = r.read().decode()
        except Exception:
            return {}
        out = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in wanted:
                out[parts[0]] = float(parts[1])
        return out


class SerfCluster(Cluster):
    system = "serf"

    def __init__(self, serf, n, workdir, label, bind_base, rpc_base, poll_mode):
        super().__init__(n, workdir, label)
        self.serf = serf
        self.bind = [f"127.0.0.1:{bind_base + i}" for i in range(n)]
        self.rpc_addr = [f"127.0.0.1:{rpc_base + i}" for i in range(n)]
        self.rpc = [SerfRpc(addr) for addr in self.rpc_addr]
        self.poll_mode = poll_mode

    def start(self, i, join=True):
        self.rpc[i].close()
        argv = [self.serf, "agent", f"-node={self.names[i]}", f"-bind={self.bind[i]}",
                f"-rpc-addr={self.rpc_addr[i]}"]
        if join:
            argv += [f"-join={self.bind[s]}" for s in range(SEEDS) if s != i]
        self.procs[i] = spawn(argv, os.path.join(self.dir, f"{self.names[i]}.log"))

    def start_all(self):
        # serf does not retry -join and islands never merge, so the first
        # seed starts alone and the others join once it answers (its start
        # is inside the measured convergence time). A -join succeeds if any
        # listed seed answers; seeds not up yet are skipped.
        self.start(0, join=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.rpc[0].members()
                break
            except Exception:
                time.sleep(0.01)
        for i in range(1, self.n):
            self.start(i)

    def restart(self, i):
        self.start(i)

    def view(self, i):
        if self.poll_mode == "cli":
            out = subprocess.run([self.serf, "members", f"-rpc-addr={self.rpc_addr[i]}", "-format=json"],
                                 capture_output=True, timeout=POLL_TIMEOUT_S * 3, check=True).stdout
            members = [{"Name": m["name"], "Status": m["status"]} for m in json.loads(out)["members"]]
        else:
            members = self.rpc[i].members()
        view = {}
        for member in members:
            status = member["Status"]
            state = {"alive": "alive", "failed": "down", "left": "left", "leaving": "left"}.get(status, status)
            view.setdefault(member["Name"], []).append((state, None))
        return view

    def cross_check(self, i):
        """The CLI's and the RPC's member lists of agent i agree."""
        out = subprocess.run([self.serf, "members", f"-rpc-addr={self.rpc_addr[i]}", "-format=json"],
                             capture_output=True, timeout=10, check=True).stdout
        cli = sorted((m["name"], m["status"]) for m in json.loads(out)["members"])
        rpc = sorted((m["Name"], m["Status"]) for m in self.rpc[i].members())
        return cli == rpc, cli, rpc


def run_quiet(argv):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(argv)} failed:\n{result.stdout}{result.stderr}")


# ------------------------------------------------------------------ phases


def measure_convergence(cluster, timeout_s):
    start = time.monotonic()
    cluster.start_all()
    waited = cluster.wait_converged(timeout_s)
    if waited is None:
        log(f"{cluster.label}: did NOT converge within {timeout_s}s")
        return None
    elapsed = time.monotonic() - start
    log(f"{cluster.label}: {cluster.n} agents all see {cluster.n} alive after {elapsed:.2f}s")
    return elapsed


def measure_resources(clusters, window_s):
    before = {c.label: [cpu_ticks(p.pid) for p in c.procs] for c in clusters}
    time.sleep(window_s)
    out = {}
    for c in clusters:
        after = [cpu_ticks(p.pid) for p in c.procs]
        cpu_s_per_min = [(a - b) / CLK_TCK / window_s * 60 for a, b in zip(after, before[c.label])]
        rss_mib = [rss_kib(p.pid) / 1024 for p in c.procs]
        out[c.system] = {
            "window_s": window_s,
            "cpu_s_per_min_median": statistics.median(cpu_s_per_min),
            "cpu_s_per_min_max": max(cpu_s_per_min),
            "cpu_s_per_min_total": sum(cpu_s_per_min),
            "rss_mib_median": statistics.median(rss_mib),
            "rss_mib_max": max(rss_mib),
        }
        log(f"{c.label}: CPU {out[c.system]['cpu_s_per_min_median']:.3f} s/min per agent (median), "
            f"RSS {out[c.system]['rss_mib_median']:.1f} MiB (median)")
    return out


def measure_kill(cluster, victim, timeout_s, period_s):
    """kill -9 `victim`; returns per-kill result with the time until the
    first and until the last other agent reported it down."""
    cluster.check_alive()
    pre = cluster.poll([0])[0][1] or {}
    old_gen = max((gen or 0) for _, gen in pre.get(cluster.names[victim], [("", 0)]))
    name = cluster.names[victim]
    observers = [i for i in range(cluster.n) if i != victim]
    first_down = {}
    rounds = []
    t_kill = time.monotonic()
    cluster.kill9(victim)
    deadline = t_kill + timeout_s
    while len(first_down) < len(observers) and time.monotonic() < deadline:
        round_start = time.monotonic()
        pending = [i for i in observers if i not in first_down]
        for i, (at, view) in cluster.poll(pending).items():
            rows = (view or {}).get(name, [])
            if any(state in ("down", "left") and (gen is None or gen == old_gen) for state, gen in rows):
                first_down[i] = at - t_kill
        rounds.append(time.monotonic() - round_start)
        time.sleep(max(0.0, period_s - (time.monotonic() - round_start)))
    result = {
        "victim": name,
        "observers": len(observers),
        "observers_reporting_down": len(first_down),
        "first_s": min(first_down.values()) if first_down else None,
        "all_s": max(first_down.values()) if len(first_down) == len(observers) else None,
        "poll_round_s_median": statistics.median(rounds) if rounds else None,
    }
    # Restart it and wait until every agent sees it alive again.
    t_restart = time.monotonic()
    cluster.restart(victim)
    waited = cluster.wait_converged(60, want_gen=(name, old_gen) if cluster.system == "shoal" else None)
    result["restart_alive_everywhere_s"] = None if waited is None else time.monotonic() - t_restart
    log(f"{cluster.label}: kill -9 {name}: first down {fmt(result['first_s'])}, all "
        f"{len(observers)} {fmt(result['all_s'])}; restarted, alive everywhere after "
        f"{fmt(result['restart_alive_everywhere_s'])}")
    return result


def measure_stall(cluster, victim, stall_s, after_s, period_s):
    """SIGSTOP `victim` for stall_s, SIGCONT, watch after_s more and until
    reconverged; every down state seen for any member is recorded."""
    cluster.check_alive()
    name = cluster.names[victim]
    false_down = set()  # (observer, member), member != victim
    false_suspect = set()
    victim_down_by = set()
    victim_down_first_s = None
    t_stop = time.monotonic()

    def record(answers):
        nonlocal victim_down_first_s
        for i, (at, view) in answers.items():
            for member, rows in (view or {}).items():
                states = {state for state, _ in rows}
                if member == name:
                    if "down" in states and i != victim:
                        victim_down_by.add(cluster.names[i])
                        if victim_down_first_s is None:
                            victim_down_first_s = at - t_stop
                elif "down" in states or "left" in states:
                    false_down.add((cluster.names[i], member))
                elif "suspect" in states:
                    false_suspect.add((cluster.names[i], member))

    os.kill(cluster.procs[victim].pid, signal.SIGSTOP)
    others = [i for i in range(cluster.n) if i != victim]
    while time.monotonic() < t_stop + stall_s:
        round_start = time.monotonic()
        record(cluster.poll(others))
        time.sleep(max(0.0, min(period_s - (time.monotonic() - round_start), t_stop + stall_s - time.monotonic())))
    os.kill(cluster.procs[victim].pid, signal.SIGCONT)
    t_cont = time.monotonic()
    while time.monotonic() < t_cont + after_s:
        round_start = time.monotonic()
        record(cluster.poll(range(cluster.n)))
        time.sleep(max(0.0, period_s - (time.monotonic() - round_start)))
    waited = cluster.wait_converged(60, period_s=period_s, recorder=record)
    cluster.check_alive()
    result = {
        "stalled": name,
        "stall_s": stall_s,
        "false_down_pairs": len(false_down),
        "false_down_pairs_by_stalled_node": sum(1 for obs, _ in false_down if obs == name),
        "false_down_members": len({member for _, member in false_down}),
        "false_suspect_pairs": len(false_suspect),
        "stalled_declared_down": bool(victim_down_by),
        "stalled_down_observers": len(victim_down_by),
        "stalled_down_first_s": victim_down_first_s,
        "reconverged_after_cont_s": None if waited is None else time.monotonic() - t_cont,
    }
    if false_down:
        result["false_down_examples"] = sorted(false_down)[:10]
    log(f"{cluster.label}: STOP {name} {stall_s}s: false down pairs {len(false_down)} "
        f"(by stalled node {result['false_down_pairs_by_stalled_node']}), false suspect pairs "
        f"{len(false_suspect)}, stalled node declared down: {result['stalled_declared_down']} "
        f"(by {len(victim_down_by)}), reconverged {fmt(result['reconverged_after_cont_s'])} after CONT")
    return result


def stall_series(cluster, rng, args):
    results = []
    for stall_s in args.stalls:
        for _ in range(args.stall_reps):
            if cluster.wait_converged(60) is None:
                log(f"{cluster.label}: not converged before a stall; going on anyway")
            time.sleep(args.stall_settle)
            victim = rng.choice(cluster.non_seeds())
            results.append(measure_stall(cluster, victim, stall_s, args.stall_after, args.stall_poll))
    return results


def summarize_stalls(results):
    out = {}
    for stall_s in sorted({r["stall_s"] for r in results}):
        rs = [r for r in results if r["stall_s"] == stall_s]
        out[str(stall_s)] = {
            "stalls": len(rs),
            "false_down_pairs_total": sum(r["false_down_pairs"] for r in rs),
            "false_down_pairs_by_stalled_node": sum(r["false_down_pairs_by_stalled_node"] for r in rs),
            "stalls_with_false_down": sum(1 for r in rs if r["false_down_pairs"]),
            "false_suspect_pairs_total": sum(r["false_suspect_pairs"] for r in rs),
            "stalled_declared_down": sum(1 for r in rs if r["stalled_declared_down"]),
        }
    return out


def fmt(seconds):
    return "n/a" if seconds is None else f"{seconds:.2f}s"


def stats_of(values):
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values)}


def metrics_sum(cluster):
    total = {}
    for i in range(cluster.n):
        for key, value in cluster.metrics(i).items():
            total[key] = total.get(key, 0) + value
    return total


# -------------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shoal", default="target/release/shoal", help="the shoal binary (built beforehand)")
    parser.add_argument("--serf", default=shutil.which("serf") or "serf", help="the serf binary")
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--kills", type=int, default=5, help="kill -9 rounds per system")
    parser.add_argument("--converge-reps", type=int, default=3, help="fresh clusters per system")
    parser.add_argument("--steady", type=float, default=60, help="CPU/RSS window in seconds")
    parser.add_argument("--settle", type=float, default=10, help="seconds after convergence before the window")
    parser.add_argument("--stalls", type=float, nargs="*", default=[3, 6], help="SIGSTOP durations (s)")
    parser.add_argument("--stall-reps", type=int, default=3, help="stalls per duration per configuration")
    parser.add_argument("--stall-after", type=float, default=10, help="seconds watched after SIGCONT")
    parser.add_argument("--stall-settle", type=float, default=2, help="seconds between convergence and a stall")
    parser.add_argument("--stall-poll", type=float, default=0.15, help="poll period during stalls (s)")
    parser.add_argument("--no-serf-stall", action="store_true", help="skip the serf stall comparison")
    parser.add_argument("--poll", type=float, default=0.1, help="poll period during detection (s)")
    parser.add_argument("--serf-poll", choices=["rpc", "cli"], default="rpc",
                        help="read serf member lists over its RPC (default) or by running `serf members`")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed for the victims")
    parser.add_argument("--base-port", type=int, default=21400,
                        help="shoal QUIC base+i, HTTP base+1000+i; serf bind base+2000+i, RPC base+3000+i")
    parser.add_argument("--workdir", default=None, help="where configs, certs, data and logs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    if args.nodes < SEEDS + 1 or args.nodes > 900:
        sys.exit(f"--nodes: must be {SEEDS + 1} to 900")
    if not (os.path.isfile(args.shoal) and os.access(args.shoal, os.X_OK)):
        sys.exit(f"error: no shoal binary at {args.shoal}; build one, e.g.\n"
                 "  CARGO_TARGET_DIR=/tmp/target-bench cargo build --release -p shoal-agent\n"
                 "and pass --shoal /tmp/target-bench/release/shoal")
    serf = shutil.which(args.serf)
    if serf is None:
        sys.exit("error: serf is not installed; on Debian/Ubuntu run:\n  apt-get install -y serf")
    ports = [args.base_port + k * 1000 + i for k in range(4) for i in range(args.nodes)]
    busy = [p for p in ports if not port_free(p)]
    if busy:
        sys.exit(f"error: ports in use: {busy[:10]}...; pick another --base-port")

    atexit.register(kill_all_children)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)

    seed = args.seed if args.seed is not None else random.randrange(2**31)
    rng = random.Random(seed)
    workdir = args.workdir or tempfile.mkdtemp(prefix="shoal-bench-membership-")
    os.makedirs(workdir, exist_ok=True)
    if not args.keep and args.workdir is None:
        atexit.register(shutil.rmtree, workdir, True)
    # Run copies under neutral names: on a shared machine someone's
    # `pkill shoal` (it happened during a run) must not end the benchmark.
    bin_dir = os.path.join(workdir, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    shutil.copy2(args.shoal, os.path.join(bin_dir, "bench-agent-a"))
    shutil.copy2(serf, os.path.join(bin_dir, "bench-agent-b"))
    args.shoal = os.path.join(bin_dir, "bench-agent-a")
    serf = os.path.join(bin_dir, "bench-agent-b")
    shoal_version = subprocess.run([args.shoal, "--version"], capture_output=True, text=True).stdout.strip()
    serf_version = subprocess.run([serf, "version"], capture_output=True, text=True).stdout.splitlines()[0]
    log(f"{shoal_version} vs {serf_version}; {args.nodes} nodes each; seed {seed}; workdir {workdir}")

    n = args.nodes
    base = args.base_port
    results = {
        "nodes": n, "seed": seed, "shoal_version": shoal_version, "serf_version": serf_version,
        "nproc": os.cpu_count(), "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "args": {k: v for k, v in vars(args).items() if k not in ("workdir", "out")},
    }

    def shoal_cluster(label, lifeguard=True):
        return ShoalCluster(args.shoal, n, workdir, label, base, base + 1000, lifeguard)

    def serf_cluster(label):
        return SerfCluster(serf, n, workdir, label, base + 2000, base + 3000, args.serf_poll)

    try:
        run_phases(args, results, rng, shoal_cluster, serf_cluster)
    except AgentsExited as error:
        log(f"error: {error}")
        results["error"] = str(error)
    results["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    results["wall_s"] = time.monotonic() - T0
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
        log(f"wrote {args.out}")
    if "error" in results:
        sys.exit(1)
    print_report(results)


def run_phases(args, results, rng, shoal_cluster, serf_cluster):
    # Convergence of fresh clusters, alternating the systems; the last pair
    # stays up for the rest.
    conv = {"shoal": [], "serf": []}
    shoal = serf_c = None
    for rep in range(args.converge_reps):
        last = rep == args.converge_reps - 1
        for make in (lambda: shoal_cluster(f"shoal-conv{rep}"), lambda: serf_cluster(f"serf-conv{rep}")):
            cluster = make()
            conv[cluster.system].append(measure_convergence(cluster, 60))
            if last:
                if cluster.system == "shoal":
                    shoal = cluster
                else:
                    serf_c = cluster
            else:
                cluster.stop()
    results["convergence_s"] = {k: {"runs": v, **stats_of(v)} for k, v in conv.items()}

    ok, cli, rpc = serf_c.cross_check(0)
    results["serf_rpc_matches_cli"] = ok
    log(f"serf RPC member list matches `serf members -format=json`: {ok}")
    if not ok:
        log(f"  cli {cli}\n  rpc {rpc}")

    # Steady state: both clusters up, converged, nobody polling.
    time.sleep(args.settle)
    results["resources"] = measure_resources([shoal, serf_c], args.steady)

    # Detection: kill -9 a random non-seed, alternating the systems.
    kills = {"shoal": [], "serf": []}
    for _ in range(args.kills):
        for cluster in (shoal, serf_c):
            if cluster.wait_converged(60) is None:
                log(f"{cluster.label}: not converged before a kill; going on anyway")
            victim = rng.choice(cluster.non_seeds())
            kills[cluster.system].append(measure_kill(cluster, victim, 60, args.poll))
    results["detection"] = {
        system: {
            "all_s": stats_of([r["all_s"] for r in rs]),
            "first_s": stats_of([r["first_s"] for r in rs]),
            "restart_alive_everywhere_s": stats_of([r["restart_alive_everywhere_s"] for r in rs]),
            "poll_round_s_median": statistics.median([r["poll_round_s_median"] for r in rs if r["poll_round_s_median"]] or [0]),
            "kills": rs,
        }
        for system, rs in kills.items()
    }

    # Stalls: serf on its running cluster, then fresh Shoal clusters with
    # Lifeguard on and off.
    stalls = {}
    if not args.no_serf_stall:
        stalls["serf"] = stall_series(serf_c, rng, args)
    serf_c.stop()
    shoal.stop()
    for lifeguard in (True, False):
        label = f"shoal-lifeguard-{'on' if lifeguard else 'off'}"
        cluster = shoal_cluster(label, lifeguard)
        measure_convergence(cluster, 60)
        before = metrics_sum(cluster)
        stalls[label] = stall_series(cluster, rng, args)
        after = metrics_sum(cluster)
        stalls[label + "-metrics-delta"] = {k: after.get(k, 0) - before.get(k, 0) for k in sorted(after)}
        cluster.stop()
    results["stalls"] = {
        key: ({"summary": summarize_stalls(value), "runs": value} if isinstance(value, list) else value)
        for key, value in stalls.items()
    }


def print_report(r):
    def ratio(a, b):
        return "n/a" if not a or not b else f"{a / b:.2f}"

    print("\n=== membership benchmark:", r["nodes"], "nodes per system ===")
    rows = []
    d, c, res = r["detection"], r["convergence_s"], r["resources"]
    for label, shoal_v, serf_v, unit in [
        ("detection, all observers, median", d["shoal"]["all_s"].get("median"), d["serf"]["all_s"].get("median"), "s"),
        ("detection, all observers, max", d["shoal"]["all_s"].get("max"), d["serf"]["all_s"].get("max"), "s"),
        ("detection, first observer, median", d["shoal"]["first_s"].get("median"), d["serf"]["first_s"].get("median"), "s"),
        ("restarted node alive everywhere, median", d["shoal"]["restart_alive_everywhere_s"].get("median"),
         d["serf"]["restart_alive_everywhere_s"].get("median"), "s"),
        ("convergence of a fresh cluster, median", c["shoal"].get("median"), c["serf"].get("median"), "s"),
        ("convergence of a fresh cluster, max", c["shoal"].get("max"), c["serf"].get("max"), "s"),
        ("CPU per agent, median", res["shoal"]["cpu_s_per_min_median"], res["serf"]["cpu_s_per_min_median"], "s/min"),
        ("RSS per agent, median", res["shoal"]["rss_mib_median"], res["serf"]["rss_mib_median"], "MiB"),
    ]:
        rows.append((label, shoal_v, serf_v, unit))
        s = "n/a" if shoal_v is None else f"{shoal_v:.3f}"
        f = "n/a" if serf_v is None else f"{serf_v:.3f}"
        print(f"{label:<42} shoal {s:>8} {unit:<5}  serf {f:>8} {unit:<5}  shoal/serf {ratio(shoal_v, serf_v)}")
    print(f"poll round (median): shoal {d['shoal']['poll_round_s_median']:.3f}s, serf {d['serf']['poll_round_s_median']:.3f}s")
    print("\nstalls (false down = (observer, healthy member) pairs seen down):")
    for key, value in r["stalls"].items():
        if "summary" in value:
            for stall_s, s in value["summary"].items():
                print(f"  {key:<22} STOP {stall_s:>4}s x{s['stalls']}: false-down pairs {s['false_down_pairs_total']} "
                      f"(by the stalled node {s['false_down_pairs_by_stalled_node']}; in {s['stalls_with_false_down']} stalls), "
                      f"false-suspect pairs {s['false_suspect_pairs_total']}, stalled node declared down "
                      f"{s['stalled_declared_down']}/{s['stalls']}")
        else:
            print(f"  {key}: {value}")
    print(f"wall time {r['wall_s']:.0f}s; load average start {r['loadavg_start']} end {r['loadavg_end']}")


if __name__ == "__main__":
    main()
