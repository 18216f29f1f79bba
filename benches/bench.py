#!/usr/bin/env python3
"""The ts3ab-lb benchmark suite (started by benches/run.sh, which installs and builds first).

Every claim is a ratio or a difference measured side by side in this one run, in interleaved
rounds (A, B, C, A, B, C, ...), reported as median with min/max over the rounds. The proxy under
test is pinned to CPU 0; load generators and upstreams (nginx, fake nodes) to CPU 1.

Sections (all by default; pick with --only):
  proxy     proxy overhead: direct / nginx / bare Pingora / ts3ab-lb in front of an nginx fake node
  twocore   both cores for everything: router threads 2 / nginx 2 workers / bare Pingora 2 threads,
            req/s per proxy core with every process's CPU; the router at the WebInterface's mix
  knobs     (only with --only) settings below Pingora's defaults, each A/B against the unchanged build
  fanout    bot/list latency through the router over 1, 4, 16, 64 fake nodes
  scaling   cluster throughput over 1..16 fake nodes with a service time and a concurrency limit
  placement 10,000 creates, 64 concurrent, over nodes of mixed capacity
  scale     100 nodes x 300 bots: router memory and bot/use routing latency
  failover  kill a node with 300 bots; time until they run elsewhere
  restart   kill a node with 300 bots and start it again after 1 s; time until all run again there
  store     creates on MongoDB vs the embedded store (creates/s, added latency), and the sync delay
            between two routers on one database (nx-27017 unless TS3AB_BENCH_MONGODB_URI is set)
  micro     criterion micro-benchmarks (parser/rewriter, routing and placement decisions)

Writes <out>/results.md (tables + targets), results.json (every round), results.csv (flat).
Only the standard library is used.
"""

import argparse
import base64
import csv
import ctypes
import datetime
import glob
import http.client
import json
import os
import platform
import random
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.path.abspath(__file__)).parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
REL = TARGET / "release"
EX = REL / "examples"
NGINX_DIR = ROOT / "benches" / "nginx"

PROXY_CPU, LOAD_CPU = "0", "1"
# Not pinned (the `twocore` section: every process may use both cores), still at nice -10.
ANY_CPU = "any"
# As root, every benchmark process runs at nice -10, so background jobs on the machine (builds,
# tests) take less CPU from the measurement; elsewhere `nice` just warns and runs at 0.
NICE = ["nice", "-n", "-10"] if os.geteuid() == 0 else []


def pinned(cpu):
    return NICE + ["taskset", "-c", cpu]
NODE_AUTH = "router:node-token"
NODE_HDR = "Basic " + base64.b64encode(NODE_AUTH.encode()).decode()
KEY = ("bench", "bench-secret-123")
KEY_HDR = "Basic " + base64.b64encode(f"{KEY[0]}:{KEY[1]}".encode()).decode()
ADMIN_HDR = "Basic " + base64.b64encode(b"ops:ops-secret-123").decode()
ALL_SECTIONS = ["proxy", "twocore", "fanout", "scaling", "placement", "scale", "failover", "restart", "store", "micro"]
# Run only when named with --only (not part of a full run).
OPTIONAL_SECTIONS = ["knobs"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- processes ---------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: the child gets SIGKILL if this runner dies (even by SIGKILL).
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)


class Procs:
    """Every process the runner starts, by PID; all are stopped (bounded) at exit."""

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.live = {}

    def start(self, name, argv, cpu=None, log_path=None, stdout_pipe=False, env=None):
        if cpu == ANY_CPU:
            argv = NICE + list(argv)
        elif cpu is not None:
            argv = pinned(cpu) + list(argv)
        err = open(log_path, "ab") if log_path else subprocess.DEVNULL
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else err,
            stderr=err,
            preexec_fn=_die_with_parent,
            env=env,
        )
        if log_path:
            err.close()
        p.bench_name = name
        self.live[p.pid] = p
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid} {name}\n")
        return p

    def adopt(self, pid, name):
        """Records a process this runner did not start itself (an nginx master's workers), so
        run.sh's cleanup stops it even if the master dies without stopping it."""
        with open(self.pidfile, "a") as f:
            f.write(f"{pid} {name}\n")

    def stop(self, p, sig=signal.SIGTERM, timeout=5.0):
        if p.pid not in self.live:
            return
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{p.bench_name} (pid {p.pid}) ignored signal {sig}; killing it")
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
            except ProcessLookupError:
                pass
        if p.stdout:
            p.stdout.close()
        del self.live[p.pid]

    def stop_all(self):
        for p in list(self.live.values()):
            self.stop(p, getattr(p, "stop_signal", signal.SIGTERM), 3.0)


PROCS = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.bench_name} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def read_lines(p, want, timeout=60.0):
    """Reads stdout lines until `want(lines)` is true."""
    lines, buf, end = [], b"", time.time() + timeout
    fd = p.stdout.fileno()
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                lines.append(line.decode().strip())
            if want(lines):
                return lines
        elif p.poll() is not None:
            break
    raise RuntimeError(f"{p.bench_name}: wanted output not seen (got {lines[-3:]})")


def http_get(port, path, auth=None, timeout=10.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.putrequest("GET", path, skip_accept_encoding=True)
        if auth:
            c.putheader("Authorization", auth)
        c.endheaders()
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# ---- components --------------------------------------------------------------------------------


def start_fake_cluster(work, name, nodes, bots=0, service_ms=0, max_conc=None, workers=1, cpu=LOAD_CPU):
    argv = [str(EX / "fake_cluster"), "--nodes", str(nodes), "--bots", str(bots), "--auth", NODE_AUTH,
            "--workers", str(workers)]
    if service_ms:
        argv += ["--service-time-ms", str(service_ms)]
    if max_conc:
        argv += ["--max-concurrency", str(max_conc)]
    p = PROCS.start(name, argv, cpu=cpu, log_path=work / f"{name}.log", stdout_pipe=True)
    lines = read_lines(p, lambda ls: "ready" in ls, timeout=120)
    p.urls = [l.split()[-1] for l in lines if l.startswith("listening on ")]
    return p


def start_fake_node(work, name, bots):
    argv = [str(REL / "ts3ab-fake-node"), "--name", name, "--auth", NODE_AUTH, "--anonymous", "none",
            "--bots", str(bots)]
    p = PROCS.start(name, argv, cpu=LOAD_CPU, log_path=work / f"{name}.log", stdout_pipe=True)
    lines = read_lines(p, lambda ls: any(l.startswith("listening on ") for l in ls), timeout=30)
    p.url = next(l.split()[-1] for l in lines if l.startswith("listening on "))
    return p


def start_router(work, name, nodes, threads=1, work_stealing=False, interval_ms=2000, pool=128, binary=None,
                 routing=None, extra=None, storage=None, metrics=True, env_extra=None, cpu=PROXY_CPU):
    """`nodes`: list of (addr, capacity). Returns the process with .port and .admin_port (its admin
    listener, on a free port so that several routers can run side by side; `metrics=False` turns
    request recording off, to price it; `env_extra`: more environment, e.g. allocator options)."""
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        f'listen: "127.0.0.1:{port}"',
        f'keys: [{{name: {KEY[0]}, secret: "{KEY[1]}", role: user}}, {{name: ops, secret: "ops-secret-123", role: admin}}]',
        "nodes:",
    ]
    for i, (addr, cap) in enumerate(nodes):
        lines.append(f'  - {{name: n{i}, url: "http://{addr}", auth: "{NODE_AUTH}", capacity: {cap}}}')
    lines += [
        "storage: " + (storage or f'{{kind: embedded, path: "{d / "store"}"}}'),
        f"server: {{threads: {threads}, work_stealing: {str(work_stealing).lower()}, grace_period_seconds: 0, "
        f"graceful_shutdown_timeout_seconds: 0, upstream_keepalive_pool_size: {pool}, "
        f'pid_file: "{d / "pingora.pid"}", upgrade_sock: "{d / "upgrade.sock"}"}}',
        f"health: {{interval_ms: {interval_ms}}}",
    ]
    admin_port = free_port()
    # Candidate builds (`binary`) get the same admin settings (metrics recording on), so an
    # A/B compares like with like; BENCH_EXTRA_NO_ADMIN=1 leaves them out for builds that
    # predate `admin.metrics`.
    bare_extra = binary is not None and os.environ.get("BENCH_EXTRA_NO_ADMIN") == "1"
    if not bare_extra and not any(l.startswith("admin:") for l in (extra or [])):
        off = "" if metrics else ", metrics: false"
        lines.append(f'admin: {{listen: "127.0.0.1:{admin_port}"{off}}}')
    if routing:
        lines.append("routing: {" + ", ".join(f"{k}: {v}" for k, v in routing.items()) + "}")
    lines += extra or []
    (d / "config.yaml").write_text("\n".join(lines) + "\n")
    env = dict(os.environ, RUST_LOG="info", **(env_extra or {}))
    p = PROCS.start(name, [str(binary or REL / "ts3ab-lb"), "serve", "--config", str(d / "config.yaml")], cpu=cpu,
                    log_path=d / "router.log", env=env)
    p.stop_signal = signal.SIGINT
    p.port = port
    p.admin_port = admin_port
    wait_port(port, p)
    return p


def scrape_metric(admin_port, series):
    """The value of one series (`name{labels as written}`) on a router's /metrics, or None."""
    st, body = http_get(admin_port, "/metrics", ADMIN_HDR)
    if st != 200:
        raise RuntimeError(f"/metrics answered {st}")
    for line in body.decode().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def router_bots(port, expect=None, timeout=60.0):
    """The router's bot/list ids; waits until there are `expect` of them."""
    end = time.time() + timeout
    ids = []
    while True:
        try:
            st, body = http_get(port, "/api/bot/list", KEY_HDR, timeout=30)
            if st == 200:
                ids = sorted(b["Id"] for b in json.loads(body) if b.get("Id") is not None)
                if expect is None or len(ids) >= expect:
                    return ids
        except (OSError, ValueError, http.client.HTTPException):
            pass
        if time.time() > end:
            raise RuntimeError(f"router on {port} knows {len(ids)} bots, wanted {expect}")
        time.sleep(0.5)


def start_nginx(work, name, template, subst, cpu):
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    text = (NGINX_DIR / template).read_text()
    for k, v in dict(subst, DIR=str(d)).items():
        text = text.replace(f"@{k}@", str(v))
    (d / "nginx.conf").write_text(text)
    p = PROCS.start(name, ["nginx", "-p", str(d), "-c", str(d / "nginx.conf")], cpu=cpu,
                    log_path=d / "stderr.log")
    p.stop_signal = signal.SIGTERM
    p.port = subst["PORT"]
    wait_port(p.port, p)
    return p


# ---- measuring ---------------------------------------------------------------------------------


def cpu_times():
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if re.match(r"cpu\d", line):
                parts = line.split()
                vals = [int(x) for x in parts[1:9]]
                out[parts[0]] = (sum(vals), vals[3] + vals[4], vals[7])
    return out


def cpu_busy(before, after):
    res = {}
    for k in after:
        tot = after[k][0] - before[k][0]
        idle = after[k][1] - before[k][1]
        steal = after[k][2] - before[k][2]
        res[k] = {"busy": round(100.0 * (tot - idle) / tot, 1) if tot else 0.0,
                  "steal": round(100.0 * steal / tot, 1) if tot else 0.0}
    return res


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def wait_quiet(limit=30.0, busy=15.0):
    """Before a measurement: waits (up to `limit` s) until both CPUs are nearly idle, so a build or
    test someone else started does not land in the middle of a round. Returns the seconds waited."""
    t0 = time.time()
    while True:
        c0 = cpu_times()
        time.sleep(0.3)
        b = cpu_busy(c0, cpu_times())
        if all(v["busy"] < busy for v in b.values()) or time.time() - t0 > limit:
            waited = time.time() - t0 - 0.3
            if waited > 1:
                log(f"waited {waited:.0f}s for a quiet machine")
            QUIET_WAITS.append(round(waited, 1))
            return waited
        time.sleep(1.0)


QUIET_WAITS = []


def wrk(port, path, auth, seconds, conns=32, pid=None):
    wait_quiet()
    url = f"http://127.0.0.1:{port}{path}"
    c0, t0 = cpu_times(), time.time()
    p0 = proc_cpu(pid) if pid else None
    r = subprocess.run(pinned(LOAD_CPU) + ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-H",
                        f"Authorization: {auth}", url], capture_output=True, text=True, timeout=seconds + 30)
    wall = time.time() - t0
    busy = cpu_busy(c0, cpu_times())
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    if not m:
        raise RuntimeError(f"wrk gave no rate: {r.stdout} {r.stderr}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", r.stdout)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", r.stdout)
    total = re.search(r"(\d+) requests in", r.stdout)
    out = {"rps": float(m.group(1)), "non2xx": int(bad.group(1)) if bad else 0,
           "requests": int(total.group(1)) if total else 0,
           "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
           "cpu0": busy.get("cpu0", {}).get("busy"), "cpu1": busy.get("cpu1", {}).get("busy"),
           "steal": max(v["steal"] for v in busy.values())}
    if pid:
        out["proxy_cpu"] = round(100.0 * (proc_cpu(pid) - p0) / wall, 1)
    return out


def loadgen(port, paths, auth, seconds, conns=32, rate=None, warmup=1.0, per_conn=False, requests=None,
            work=None, pid=None, quiet=True, cpu=LOAD_CPU, fanout=()):
    """`fanout`: more ports, asked together with `port` (loadgen's fan-out mode)."""
    if quiet:
        wait_quiet()
    argv = pinned(cpu) + [str(EX / "loadgen"), "--addr", f"127.0.0.1:{port}", "--header",
            f"Authorization: {auth}", "--connections", str(conns), "--duration", str(seconds), "--warmup",
            str(warmup)]
    if len(paths) > 20:
        pf = (work or Path("/tmp")) / f"paths-{port}-{len(paths)}.txt"
        pf.write_text("\n".join(paths) + "\n")
        argv += ["--paths-file", str(pf)]
    else:
        for p in paths:
            argv += ["--path", p]
    if rate:
        argv += ["--rate", str(int(rate))]
    if per_conn:
        argv += ["--path-mode", "per-conn"]
    if requests:
        argv += ["--requests", str(requests)]
    for p in fanout:
        argv += ["--fanout", f"127.0.0.1:{p}"]
    c0, t0 = cpu_times(), time.time()
    p0 = proc_cpu(pid) if pid else None
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + warmup + 600)
    wall = time.time() - t0
    if r.returncode != 0:
        raise RuntimeError(f"loadgen failed: {r.stderr}")
    out = json.loads(r.stdout)
    busy = cpu_busy(c0, cpu_times())
    out["cpu0"] = busy.get("cpu0", {}).get("busy")
    out["cpu1"] = busy.get("cpu1", {}).get("busy")
    if pid:
        out["proxy_cpu_s"] = proc_cpu(pid) - p0
        out["proxy_cpu"] = round(100.0 * out["proxy_cpu_s"] / wall, 1)
    return out


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def fmt(x, nd=2):
    if x is None:
        return "n/a"
    if isinstance(x, float) and abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def fmt_s(s, nd=2, scale=1.0):
    if not s or s.get("median") is None:
        return "n/a"
    return f"{fmt(s['median'] * scale, nd)} ({fmt(s['min'] * scale, nd)}–{fmt(s['max'] * scale, nd)})"


# ---- sections ----------------------------------------------------------------------------------


def section_proxy(cfg, work, R):
    rounds, secs = cfg["proxy_rounds"], cfg["proxy_secs"]
    up_port = free_port()
    up = start_nginx(work, "upstream-nginx", "upstream.conf", {"PORT": up_port, "NODE_AUTH": NODE_HDR}, LOAD_CPU)
    upstream = f"127.0.0.1:{up_port}"
    ng = start_nginx(work, "proxy-nginx", "proxy.conf", {"PORT": free_port(), "UPSTREAM_PORT": up_port}, PROXY_CPU)

    def bare(name, ws, exe="bare_pingora"):
        port = free_port()
        p = PROCS.start(name, [str(EX / exe), f"127.0.0.1:{port}", upstream, "1", str(ws).lower(), "128"],
                        cpu=PROXY_CPU, log_path=work / f"{name}.log")
        p.stop_signal = signal.SIGINT
        p.port = port
        wait_port(port, p)
        return p

    # The router ships with mimalloc and Pingora's no-steal runtime (BENCHMARKS.md, tuning), so
    # "bare" is Pingora on the same allocator and runtime: the ratio prices only the router's
    # own logic. "bare default" is Pingora with its own defaults (glibc, work stealing).
    bp = bare("bare-pingora", False, "bare_pingora_mimalloc")
    bp_def = bare("bare-pingora-default", True)
    lb = start_router(work, "router", [(upstream, 300)])
    # The same router with request recording off (`admin.metrics: false`): prices the metrics.
    lb_nom = start_router(work, "router-nometrics", [(upstream, 300)], metrics=False)
    variants = cfg["proxy_variants"]
    if variants:
        bp_ws = bare("bare-pingora-steal", True, "bare_pingora_mimalloc")
        lb_ws = start_router(work, "router-steal", [(upstream, 300)], work_stealing=True)
    # Candidate builds (--extra-router NAME=BINARY); a NAME ending in "steal" runs work_stealing: true.
    extras = [(n, start_router(work, f"router-{n}", [(upstream, 300)], binary=b, work_stealing=n.endswith("steal")))
              for n, b in cfg["extra_routers"]]
    for p in [lb, lb_nom] + ([lb_ws] if variants else []) + [x[1] for x in extras]:
        ids = router_bots(p.port, 1)
        if ids != [0]:
            raise RuntimeError(f"router should map the nginx node's bot 5 to cluster id 0, has {ids}")

    song_local, song_cluster = "/api/bot/use/5/(/song)", "/api/bot/use/0/(/song)"
    info_local, info_cluster = "/api/bot/use/5/(/bot/info)", "/api/bot/use/0/(/bot/info)"
    # Check every path answers what it should before timing it.
    st, body = http_get(lb.port, info_cluster, KEY_HDR)
    if st != 200 or json.loads(body).get("Id") != 0:
        raise RuntimeError(f"router bot/info answer not translated: {st} {body[:200]}")
    targets = [
        ("direct", up, song_local, NODE_HDR),
        ("nginx", ng, song_local, NODE_HDR),
        ("bare", bp, song_local, NODE_HDR),
        ("router", lb, song_cluster, KEY_HDR),
        ("router metrics off", lb_nom, song_cluster, KEY_HDR),
        ("bare bot/info", bp, info_local, NODE_HDR),
        ("router bot/info", lb, info_cluster, KEY_HDR),
        ("bare default", bp_def, song_local, NODE_HDR),
    ]
    if variants:
        targets += [("bare work-stealing", bp_ws, song_local, NODE_HDR),
                    ("router work-stealing", lb_ws, song_cluster, KEY_HDR)]
    targets += [(f"router {n}", p, song_cluster, KEY_HDR) for n, p in extras]
    targets += [(f"router {n} bot/info", p, info_cluster, KEY_HDR) for n, p in extras]
    for name, p, path, auth in targets:
        st, _ = http_get(p.port, path, auth)
        if st != 200:
            raise RuntimeError(f"{name}: {path} answered {st}")
    log("proxy: warming up")
    for name, p, path, auth in targets:
        wrk(p.port, path, auth, 2)
    runs = {t[0]: [] for t in targets}
    for r in range(rounds):
        order = targets if r % 2 == 0 else list(reversed(targets))
        for name, p, path, auth in order:
            res = wrk(p.port, path, auth, secs, pid=None if name == "direct" else p.pid)
            res["round"] = r
            runs[name].append(res)
            if res["non2xx"] or res["socket_errors"]:
                raise RuntimeError(f"{name}: {res['non2xx']} non-2xx answers, {res['socket_errors']} socket errors")
        log("proxy round %d: %s" % (r, ", ".join(f"{n} {runs[n][-1]['rps']:.0f}" for n in runs)))

    def ratio(a, b):
        return stats([x["rps"] / y["rps"] for x, y in zip(runs[a], runs[b])])

    out = {"rounds": rounds, "seconds": secs, "connections": 32, "runs": runs,
           "rps": {n: stats([x["rps"] for x in runs[n]]) for n in runs},
           "cpu0": {n: stats([x["cpu0"] for x in runs[n]]) for n in runs},
           "cpu1": {n: stats([x["cpu1"] for x in runs[n]]) for n in runs},
           "proxy_cpu": {n: stats([x.get("proxy_cpu") for x in runs[n]]) for n in runs},
           "ratios": {"router/bare": ratio("router", "bare"), "router/nginx": ratio("router", "nginx"),
                      "router/direct": ratio("router", "direct"), "bare/nginx": ratio("bare", "nginx"),
                      "router bot/info / bare bot/info": ratio("router bot/info", "bare bot/info"),
                      "bare default/nginx": ratio("bare default", "nginx"),
                      "router/bare default": ratio("router", "bare default"),
                      "router/router metrics off": ratio("router", "router metrics off"),
                      "router metrics off/bare": ratio("router metrics off", "bare")}}
    # The shipped router did record every timed request (the ratio above prices real recording).
    recorded = scrape_metric(lb.admin_port, 'ts3ab_lb_requests_total{class="2xx",kind="pinned"}') or 0
    timed = sum(x.get("requests", 0) for x in runs["router"])
    if recorded < timed:
        raise RuntimeError(f"the router recorded {recorded} pinned requests, wrk sent at least {timed}")
    out["metrics_recorded_pinned"] = recorded
    if scrape_metric(lb_nom.admin_port, 'ts3ab_lb_requests_total{class="2xx",kind="pinned"}'):
        raise RuntimeError("the router with metrics off recorded requests")
    if variants:
        out["ratios"]["router work-stealing/bare work-stealing"] = ratio("router work-stealing", "bare work-stealing")
        out["ratios"]["router/router work-stealing"] = ratio("router", "router work-stealing")
    for n, _ in extras:
        out["ratios"][f"router {n}/router"] = ratio(f"router {n}", "router")
        out["ratios"][f"router {n}/bare"] = ratio(f"router {n}", "bare")
        out["ratios"][f"router {n}/nginx"] = ratio(f"router {n}", "nginx")
        out["ratios"][f"router {n} bot/info / router bot/info"] = ratio(f"router {n} bot/info", "router bot/info")

    # Latency at a fixed rate: half of the router's saturated rate, the same for every target.
    rate = round(out["rps"]["router"]["median"] / 2 / 100) * 100
    out["latency_rate"] = rate
    lat_targets = [t for t in targets if t[0] in ("direct", "nginx", "bare", "router")]
    lat_targets += [t for t in targets if t[0] in [f"router {n}" for n, _ in extras]]
    lat = {t[0]: [] for t in lat_targets}
    for r in range(cfg["lat_rounds"]):
        order = lat_targets if r % 2 == 0 else list(reversed(lat_targets))
        for name, p, path, auth in order:
            res = loadgen(p.port, [path], auth, cfg["lat_secs"], conns=32, rate=rate)
            res["round"] = r
            lat[name].append(res)
            if res["errors"] or res["io_errors"]:
                raise RuntimeError(f"{name}: errors at fixed rate: {res}")
        log("latency round %d @%d/s: %s" % (r, rate, ", ".join(
            f"{n} p50 {lat[n][-1]['lat_us']['p50']:.0f}us p99 {lat[n][-1]['lat_us']['p99']:.0f}us" for n in lat)))
    out["latency_runs"] = lat
    out["latency"] = {n: {q: stats([x["lat_us"][q] for x in lat[n]]) for q in ("p50", "p90", "p99", "p999")}
                      for n in lat}
    # The same at a low rate: what is left there is the machine's wake-up latency, not queueing.
    low = cfg["lat_low_rate"]
    if low:
        lowr = {t[0]: [] for t in lat_targets}
        for r in range(cfg["lat_low_rounds"]):
            for name, p, path, auth in (lat_targets if r % 2 == 0 else list(reversed(lat_targets))):
                res = loadgen(p.port, [path], auth, cfg["lat_secs"], conns=32, rate=low)
                res["round"] = r
                lowr[name].append(res)
        out["latency_low_rate"] = low
        out["latency_low_runs"] = lowr
        out["latency_low"] = {n: {q: stats([x["lat_us"][q] for x in lowr[n]]) for q in ("p50", "p90", "p99", "p999")}
                              for n in lowr}
        log("latency @%d/s: %s" % (low, ", ".join(
            f"{n} p50 {out['latency_low'][n]['p50']['median']:.0f}us p99 {out['latency_low'][n]['p99']['median']:.0f}us"
            for n in lowr)))
    out["added_latency_us"] = {
        f"{n} - direct": {q: stats([x["lat_us"][q] - y["lat_us"][q] for x, y in zip(lat[n], lat["direct"])])
                          for q in ("p50", "p99")} for n in ["router", "bare", "nginx"] + [f"router {x}" for x, _ in extras]}
    # Candidate builds: their latency ÷ the router's, per round (same rate, same rounds).
    out["latency_ratios"] = {
        f"router {n}/router": {q: stats([x["lat_us"][q] / y["lat_us"][q] for x, y in zip(lat[f"router {n}"], lat["router"])])
                               for q in ("p50", "p90", "p99", "p999")} for n, _ in extras}
    if low:
        for n, _ in extras:
            out["latency_ratios"][f"router {n}/router @ {low:,}/s"] = {
                q: stats([x["lat_us"][q] / y["lat_us"][q] for x, y in zip(lowr[f"router {n}"], lowr["router"])])
                for q in ("p50", "p90", "p99", "p999")}
    for p in [lb, lb_nom, bp, bp_def] + ([lb_ws, bp_ws] if variants else []) + [x[1] for x in extras]:
        PROCS.stop(p, signal.SIGINT)
    PROCS.stop(ng)
    PROCS.stop(up)
    R["proxy"] = out


def start_bare(work, name, upstream, threads=1, work_stealing=False, exe="bare_pingora_mimalloc", pool=128,
               flags=(), env_extra=None, cpu=PROXY_CPU):
    """A bare Pingora passthrough (`benches/bare_pingora.rs`); `flags`: its knob flags,
    `env_extra`: more environment (mimalloc's `MIMALLOC_*` options)."""
    port = free_port()
    env = dict(os.environ, **(env_extra or {}))
    p = PROCS.start(name, [str(EX / exe), f"127.0.0.1:{port}", upstream, str(threads), str(work_stealing).lower(),
                           str(pool)] + list(flags), cpu=cpu, log_path=work / f"{name}.log", env=env)
    p.stop_signal = signal.SIGINT
    p.port = port
    wait_port(port, p)
    return p


def children(pid):
    """PIDs of a process's children (an nginx master's workers)."""
    out = []
    for t in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            out += [int(x) for x in open(t).read().split()]
        except OSError:
            pass
    return out


def group_cpu(pids):
    """CPU seconds (user + system) of these processes, those that still exist."""
    total = 0.0
    for pid in pids:
        try:
            total += proc_cpu(pid)
        except (OSError, IndexError):
            pass
    return total


def anon_huge_kib(pid):
    """Transparent huge pages in use by a process (to see whether a large-page option took)."""
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# mimalloc options (same binary, environment only; mimalloc v2 reads them at start).
MI_EAGER = {"MIMALLOC_ARENA_EAGER_COMMIT": "1"}
MI_PURGE = {"MIMALLOC_PURGE_DELAY": "-1"}
MI_LARGE = {"MIMALLOC_ALLOW_LARGE_OS_PAGES": "1"}
MI_ALL = dict(MI_EAGER, **MI_PURGE, **MI_LARGE)


def section_knobs(cfg, work, R):
    """Issue 14 point 4: settings below Pingora's defaults, each an A/B against the unchanged
    build in the same interleaved rounds (proxy on CPU 0 with one thread, as in `proxy`)."""
    rounds, secs = cfg["knobs_rounds"], cfg["knobs_secs"]
    up_port = free_port()
    up = start_nginx(work, "knobs-upstream", "upstream.conf", {"PORT": up_port, "NODE_AUTH": NODE_HDR}, LOAD_CPU)
    upstream = f"127.0.0.1:{up_port}"
    ng = start_nginx(work, "knobs-nginx", "proxy.conf", {"PORT": free_port(), "UPSTREAM_PORT": up_port}, PROXY_CPU)
    # (row, flags, environment, keep-alive pool): bare Pingora on mimalloc with the no-steal
    # runtime, as the router ships; "bare" is the unchanged passthrough.
    bare_rows = [
        ("bare", [], None, 128),
        ("bare keepalive-infinite", ["--keepalive-infinite"], None, 128),
        ("bare sock-buf 1MiB", ["--sock-buf", "1048576"], None, 128),
        ("bare pool 32", [], None, 32),
        ("bare peer-timeouts", ["--peer-timeouts"], None, 128),
        ("bare mi eager-commit", [], MI_EAGER, 128),
        ("bare mi purge-delay -1", [], MI_PURGE, 128),
        ("bare mi large-pages", [], MI_LARGE, 128),
        ("bare all", ["--keepalive-infinite"], MI_ALL, 128),
    ]
    router_rows = [("router", None), ("router mi eager-commit", MI_EAGER), ("router mi purge-delay -1", MI_PURGE),
                   ("router mi large-pages", MI_LARGE), ("router mi all", MI_ALL)]
    # --knob-rows: measure only these rows (their baselines and nginx always run).
    only = cfg.get("knob_rows")
    if only:
        bare_rows = [r for r in bare_rows if r[0] == "bare" or r[0] in only]
        router_rows = [r for r in router_rows if r[0] == "router" or r[0] in only]
    procs = {}
    for name, flags, env, pool in bare_rows:
        procs[name] = start_bare(work, "knobs-" + name.replace(" ", "-"), upstream, pool=pool, flags=flags,
                                 env_extra=env)
    for name, env in router_rows:
        procs[name] = start_router(work, "knobs-" + name.replace(" ", "-"), [(upstream, 300)], env_extra=env)
        if router_bots(procs[name].port, 1) != [0]:
            raise RuntimeError(f"{name}: the nginx node's bot 5 is not cluster id 0")
    song_local, song_cluster = "/api/bot/use/5/(/song)", "/api/bot/use/0/(/song)"
    targets = [("nginx", ng, song_local, NODE_HDR)]
    targets += [(n, procs[n], song_local, NODE_HDR) for n, _, _, _ in bare_rows]
    targets += [(n, procs[n], song_cluster, KEY_HDR) for n, _ in router_rows]
    for name, p, path, auth in targets:
        st, _ = http_get(p.port, path, auth)
        if st != 200:
            raise RuntimeError(f"{name}: {path} answered {st}")
    log("knobs: warming up")
    for name, p, path, auth in targets:
        wrk(p.port, path, auth, 1)
    runs = {t[0]: [] for t in targets}
    for r in range(rounds):
        for name, p, path, auth in (targets if r % 2 == 0 else list(reversed(targets))):
            res = wrk(p.port, path, auth, secs, pid=p.pid)
            res["round"] = r
            runs[name].append(res)
            if res["non2xx"] or res["socket_errors"]:
                raise RuntimeError(f"{name}: {res['non2xx']} non-2xx answers, {res['socket_errors']} socket errors")
        log("knobs round %d: %s" % (r, ", ".join(f"{n} {runs[n][-1]['rps']:.0f}" for n in runs)))

    def ratio(a, b):
        return stats([x["rps"] / y["rps"] for x, y in zip(runs[a], runs[b])])

    out = {"rounds": rounds, "seconds": secs, "connections": 32, "runs": runs,
           "rps": {n: stats([x["rps"] for x in runs[n]]) for n in runs},
           "proxy_cpu": {n: stats([x.get("proxy_cpu") for x in runs[n]]) for n in runs},
           "cpu1": {n: stats([x["cpu1"] for x in runs[n]]) for n in runs},
           "vs_baseline": {}, "vs_nginx": {},
           "anon_huge_kib": {n: anon_huge_kib(procs[n].pid) for n in procs}}
    # CPU per request (the proxy's CPU time ÷ requests): steadier than req/s when the VM steals
    # time or the proxy's core is not quite saturated.
    def us(x):
        return 1e4 * x["proxy_cpu"] / x["rps"] if x.get("proxy_cpu") and x["rps"] else None

    out["cpu_us_per_request"] = {n: stats([us(x) for x in runs[n]]) for n in runs}
    out["cpu_vs_baseline"] = {}
    out["steal_max"] = {n: max(x["steal"] for x in runs[n]) for n in runs}
    for rows, base in ((bare_rows, "bare"), (router_rows, "router")):
        for row in rows[1:]:
            n = row[0]
            out["vs_baseline"][n] = {"baseline": base, **ratio(n, base)}
            out["cpu_vs_baseline"][n] = stats([us(x) / us(y) if us(x) and us(y) else None
                                               for x, y in zip(runs[n], runs[base])])
    for n in ("bare", "bare all", "router", "router mi all"):
        if n in runs:
            out["vs_nginx"][n] = ratio(n, "nginx")
    for p in procs.values():
        PROCS.stop(p, signal.SIGINT)
    PROCS.stop(ng)
    PROCS.stop(up)
    R["knobs"] = out


def run_measured(argv, timeout, groups):
    """Runs a load generator (not pinned) to its end and measures, over its run, the CPU seconds
    of each group of processes (`groups`: name -> list of PIDs), of the load generator itself
    (from wait4's rusage, children included) and of the whole machine. Returns (stdout, m)."""
    wait_quiet()
    c0, t0 = cpu_times(), time.time()
    g0 = {k: group_cpu(v) for k, v in groups.items()}
    # The generator's own CPU: the change of this runner's RUSAGE_CHILDREN over the run (no
    # other child of the runner ends during a measurement: servers run until their section ends).
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.Popen(NICE + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=_die_with_parent)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError(f"{argv[0]} did not finish in {timeout}s")
    wall = time.time() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    g1 = {k: group_cpu(v) for k, v in groups.items()}
    busy = cpu_busy(c0, cpu_times())
    cpu = {k: g1[k] - g0[k] for k in groups}
    cpu["generator"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    m = {"wall_s": wall, "cpu_s": cpu, "cores": {k: v / wall for k, v in cpu.items()},
         "machine_cores": sum(v["busy"] for v in busy.values()) / 100.0,
         "cpu0": busy.get("cpu0", {}).get("busy"), "cpu1": busy.get("cpu1", {}).get("busy"),
         "steal": max(v["steal"] for v in busy.values()), "returncode": p.returncode,
         "stderr": err.decode(errors="replace")[-500:]}
    return out.decode(errors="replace"), m
    return out.decode(errors="replace"), m


def parse_wrk(text):
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m:
        raise RuntimeError(f"wrk gave no rate: {text}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    total = re.search(r"(\d+) requests in", text)
    return {"rps": float(m.group(1)), "requests": int(total.group(1)) if total else 0,
            "errors": (int(bad.group(1)) if bad else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)}


# The WebInterface's polling (Splamy/TS3AudioBot WebInterface/src/ts; BENCHMARKS.md "Two cores"):
# Overview.vue asks `system/info` every 1 s, ServerTree.vue (a bot's Server tab) the merge of
# `server/tree` and `whisper/list` every 5 s, Bot.vue's refresh has no timer (on opening the page,
# then 1, 3 and 6 s after a play/pause/next/previous or the end of a song), Bots.vue asks
# `bot/list` on opening (and every 1 s only while a bot is connecting). Weights per 20 requests,
# from the sizing scenario below (per 10 tabs: 9 on a bot's page, 1 on the Overview).
UI_MIX = [
    ("server tree", 10, "/api/bot/use/{id}/(/json/merge/(/server/tree)/(/whisper/list))"),
    ("system info", 6, "/api/system/info"),
    ("bot refresh", 3, "/api/bot/use/{id}/(/json/merge/(/bot/info)/(/info/%40-1/5)/(/song)/(/repeat)/(/random)/(/volume))"),
    ("bot list", 1, "/api/bot/list"),
]
# Requests per second one open tab causes, by page (the sizing scenario; stated in BENCHMARKS.md):
# a bot page tab: ServerTree every 5 s, Bot.vue's refresh 4 times per minute (opening or one action
# or song change a minute, with its 3 echoes), `bot/list` once a minute (navigating back to the
# list); an Overview tab: `system/info` every 1 s.
UI_TAB_RATES = {"bot page": {"server tree": 1 / 5, "bot refresh": 4 / 60, "bot list": 1 / 60},
                "overview": {"system info": 1.0}}
UI_SCENARIO = {"bots_per_node": 100, "bots_per_tab": 10, "overview_share": 0.1}


def ui_mix_paths(ids, n=200, seed=5):
    rnd = random.Random(seed)
    kinds = [k for k, w, _ in UI_MIX for _ in range(w)]
    paths = []
    while len(paths) < n:
        rnd.shuffle(kinds)
        for k in kinds:
            tpl = next(t for kk, _, t in UI_MIX if kk == k)
            paths.append((k, tpl.format(id=rnd.choice(ids))))
    return paths[:n]


def ui_demand_per_node():
    """Requests per second one node's users cause in the sizing scenario, and the worst case."""
    s = UI_SCENARIO
    tabs = s["bots_per_node"] / s["bots_per_tab"]
    bot_tab = sum(UI_TAB_RATES["bot page"].values())
    over_tab = sum(UI_TAB_RATES["overview"].values())
    per_tab = (1 - s["overview_share"]) * bot_tab + s["overview_share"] * over_tab
    return {"tabs_per_node": tabs, "per_bot_page_tab": bot_tab, "per_overview_tab": over_tab,
            "per_tab": per_tab, "per_node": tabs * per_tab, "per_node_worst": tabs * 1.0}


def per_node_rates():
    """Requests per second per node, by kind, in the sizing scenario."""
    s = UI_SCENARIO
    tabs = s["bots_per_node"] / s["bots_per_tab"]
    out = {}
    for page, share in (("bot page", 1 - s["overview_share"]), ("overview", s["overview_share"])):
        for k, r in UI_TAB_RATES[page].items():
            out[k] = out.get(k, 0.0) + tabs * share * r
    return out


def section_twocore(cfg, work, R):
    """Issue 14 point 5: two cores for everything (nothing pinned). The router with
    `server.threads: 2`, nginx with 2 workers, bare Pingora with 2 threads in front of the same fast
    nginx node; then the router at the WebInterface's request mix over fake nodes."""
    rounds, secs = cfg["twocore_rounds"], cfg["twocore_secs"]
    wt, wc = cfg["twocore_wrk_threads"], cfg["twocore_conns"]
    up_port = free_port()
    up = start_nginx(work, "tc-upstream", "upstream.conf", {"PORT": up_port, "NODE_AUTH": NODE_HDR}, ANY_CPU)
    upstream = f"127.0.0.1:{up_port}"
    ng = start_nginx(work, "tc-nginx2", "proxy2.conf", {"PORT": free_port(), "UPSTREAM_PORT": up_port}, ANY_CPU)
    end = time.time() + 10
    while len(children(ng.pid)) < 2:
        if time.time() > end:
            raise RuntimeError("nginx with 2 workers: workers did not start")
        time.sleep(0.1)
    ng_pids = [ng.pid] + children(ng.pid)
    for w in ng_pids[1:]:
        PROCS.adopt(w, "tc-nginx2-worker")
    bp = start_bare(work, "tc-bare2", upstream, threads=2, cpu=ANY_CPU)
    lb = start_router(work, "tc-router2", [(upstream, 300)], threads=2, cpu=ANY_CPU)
    if router_bots(lb.port, 1) != [0]:
        raise RuntimeError("router should map the nginx node's bot 5 to cluster id 0")
    song_local, song_cluster = "/api/bot/use/5/(/song)", "/api/bot/use/0/(/song)"
    # (row, process, path, auth, proxy PIDs)
    targets = [("direct", up, song_local, NODE_HDR, []), ("nginx", ng, song_local, NODE_HDR, ng_pids),
               ("bare", bp, song_local, NODE_HDR, [bp.pid]), ("router", lb, song_cluster, KEY_HDR, [lb.pid])]
    for name, p, path, auth, _ in targets:
        st, _ = http_get(p.port, path, auth)
        if st != 200:
            raise RuntimeError(f"{name}: {path} answered {st}")
    # The request mix: fake TS3AudioBot nodes (real answer shapes; bot/info ids are translated).
    # One fake-cluster process; the mix router (the shipped defaults, so `system info` is reused
    # for `routing.system_info_cache_ms`) uses the first `nodes` of them. Two more routers with that
    # cache off, over `nodes` and all `big` nodes, price the one fan-out in the mix (`system info`,
    # asked of every node) and how it grows with the node count.
    nodes, bots, big = cfg["twocore_mix_nodes"], cfg["twocore_mix_bots"], cfg["twocore_mix_nodes_big"]
    fc = start_fake_cluster(work, "tc-nodes", big, bots=bots, cpu=ANY_CPU)
    lbm = start_router(work, "tc-router2-mix", [(u.replace("http://", ""), 300) for u in fc.urls[:nodes]],
                       threads=2, cpu=ANY_CPU)
    lbu = start_router(work, "tc-router2-mix-uncached", [(u.replace("http://", ""), 300) for u in fc.urls[:nodes]],
                       threads=2, cpu=ANY_CPU, routing={"system_info_cache_ms": 0})
    lbb = start_router(work, f"tc-router2-mix{big}", [(u.replace("http://", ""), 300) for u in fc.urls],
                       threads=2, cpu=ANY_CPU, routing={"system_info_cache_ms": 0})
    ids = router_bots(lbm.port, nodes * bots)
    router_bots(lbu.port, nodes * bots)
    router_bots(lbb.port, big * bots)
    mix = ui_mix_paths(ids)
    for kind, _, tpl in UI_MIX:
        path = tpl.format(id=ids[-1])
        st, body = http_get(lbm.port, path, KEY_HDR)
        if st != 200:
            raise RuntimeError(f"mix {kind}: {path} answered {st} {body[:200]}")
    mix_file = work / "twocore-mix-paths.txt"
    mix_file.write_text("\n".join(p for _, p in mix) + "\n")
    # Each kind alone (open loop at `kind_rate`): its own CPU per request, for the sizing.
    kind_files = {}
    for kind, _, _ in UI_MIX:
        f = work / f"twocore-kind-{kind.replace(' ', '-')}.txt"
        f.write_text("\n".join(p for k, p in mix if k == kind) + "\n")
        kind_files[f"kind {kind}"] = (f, lbm)
    kind_files["kind system info, uncached"] = (kind_files["kind system info"][0], lbu)
    kind_files[f"kind system info, {big} nodes"] = (kind_files["kind system info"][0], lbb)
    mix_rate, kind_rate = cfg["twocore_mix_rate"], cfg["twocore_kind_rate"]

    def measure(name):
        if name.startswith(("mix", "kind")):
            f, router = kind_files.get(name, (mix_file, lbm))
            argv = [str(EX / "loadgen"), "--addr", f"127.0.0.1:{router.port}", "--header", f"Authorization: {KEY_HDR}",
                    "--connections", str(wc), "--duration", str(secs), "--warmup", "0", "--paths-file", str(f)]
            if name != "mix saturated":
                argv += ["--rate", str(kind_rate if name.startswith("kind") else mix_rate)]
            text, m = run_measured(argv, secs + 60, {"proxy": [router.pid], "upstream": [fc.pid]})
            if m["returncode"] != 0:
                raise RuntimeError(f"loadgen failed: {m['stderr']}")
            j = json.loads(text)
            if j["errors"] or j["io_errors"]:
                raise RuntimeError(f"{name}: errors {j['errors']}, io errors {j['io_errors']}, status {j['status']}")
            res = {"rps": j["rps"], "requests": j["requests"], "lat_us": j["lat_us"]}
        else:
            _, p, path, auth, pids = next(t for t in targets if t[0] == name)
            argv = ["wrk", f"-t{wt}", f"-c{wc}", f"-d{secs}s", "-H", f"Authorization: {auth}",
                    f"http://127.0.0.1:{p.port}{path}"]
            text, m = run_measured(argv, secs + 60, {"proxy": pids, "upstream": [up.pid]})
            res = parse_wrk(text)
            if res["errors"]:
                raise RuntimeError(f"{name}: {res['errors']} non-2xx answers or socket errors")
        res.update(m)
        res.pop("stderr", None)
        pc = res["cores"]["proxy"]
        res["rps_per_proxy_core"] = res["rps"] / pc if pc > 0.01 else None
        res["proxy_cpu_us_per_request"] = 1e6 * res["cpu_s"]["proxy"] / res["requests"] if res["requests"] else None
        return res

    names = [t[0] for t in targets] + ["mix saturated", "mix fixed"] + list(kind_files)
    log("twocore: warming up")
    for name, p, path, auth, _ in targets:
        subprocess.run(NICE + ["wrk", f"-t{wt}", f"-c{wc}", "-d1s", "-H", f"Authorization: {auth}",
                               f"http://127.0.0.1:{p.port}{path}"], capture_output=True, timeout=60)
    runs = {n: [] for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else list(reversed(names))):
            res = measure(name)
            res["round"] = r
            runs[name].append(res)
        log("twocore round %d: %s" % (r, ", ".join(
            f"{n} {runs[n][-1]['rps']:.0f}/s proxy {runs[n][-1]['cores']['proxy']:.2f} cores" for n in names)))

    def st(name, f):
        return stats([f(x) for x in runs[name]])

    def ratio(a, b, key="rps"):
        return stats([x[key] / y[key] if x.get(key) and y.get(key) else None for x, y in zip(runs[a], runs[b])])

    out = {"rounds": rounds, "seconds": secs, "wrk_threads": wt, "connections": wc, "runs": runs,
           "mix_nodes": nodes, "mix_bots": bots, "mix_rate": mix_rate, "kind_rate": kind_rate, "mix_nodes_big": big,
           "mix_weights": {k: w for k, w, _ in UI_MIX}, "mix_paths": len(mix),
           "rows": {}, "ratios": {}}
    for n in names:
        out["rows"][n] = {
            "rps": st(n, lambda x: x["rps"]),
            "proxy_cores": st(n, lambda x: x["cores"]["proxy"]),
            "generator_cores": st(n, lambda x: x["cores"]["generator"]),
            "upstream_cores": st(n, lambda x: x["cores"]["upstream"]),
            "machine_cores": st(n, lambda x: x["machine_cores"]),
            "rps_per_proxy_core": st(n, lambda x: x["rps_per_proxy_core"]),
            "proxy_cpu_us_per_request": st(n, lambda x: x["proxy_cpu_us_per_request"]),
        }
    for a, b in (("router", "nginx"), ("router", "bare"), ("bare", "nginx")):
        out["ratios"][f"{a}/{b} req/s"] = ratio(a, b)
        out["ratios"][f"{a}/{b} req/s per proxy core"] = ratio(a, b, "rps_per_proxy_core")
    # Sizing: requests per router core at the mix (from the CPU per request at a fixed rate, the
    # load a router sees in service, and at saturation), and nodes per router core.
    demand = ui_demand_per_node()
    out["demand"] = demand
    sizing = {}
    for n in ("mix fixed", "mix saturated"):
        us = out["rows"][n]["proxy_cpu_us_per_request"]["median"]
        if us:
            per_core = 1e6 / us
            sizing[n] = {"cpu_us_per_request": us, "req_per_s_per_core": per_core,
                         "nodes_per_core": per_core / demand["per_node"],
                         "nodes_per_core_worst": per_core / demand["per_node_worst"]}
    out["sizing"] = sizing
    # Per kind: CPU per request (open loop; `system info` on the shipped router is mostly reused
    # answers), a real `system info` fan-out as a + b × nodes from the two uncached routers; then
    # the largest N with N × (per node demand × cost) + the fan-outs ≤ one core.
    cost = {k: out["rows"][f"kind {k}"]["proxy_cpu_us_per_request"]["median"] for k, _, _ in UI_MIX}
    c_small = out["rows"]["kind system info, uncached"]["proxy_cpu_us_per_request"]["median"]
    c_big = out["rows"][f"kind system info, {big} nodes"]["proxy_cpu_us_per_request"]["median"]
    window_s = 1.0  # routing.system_info_cache_ms's default
    if all(cost.values()) and c_small and c_big:
        b = max(0.0, (c_big - c_small) / (big - nodes))
        a = c_small - b * nodes
        rates = per_node_rates()

        # The cached router's measured `system info` cost includes its real fan-outs (one per
        # window over `nodes` nodes, shared by `kind_rate` × window requests); what a reused
        # answer costs is the rest. The model below adds the fan-outs back per window at N nodes.
        hit = max(0.0, cost["system info"] - (a + b * nodes) / (kind_rate * window_s))

        def nodes_per_core(rates, cached=True):
            # Cached (the default): N × Σ rate × cost (a reused `system info` at its measured cost)
            # + one fan-out (a + b × N) per window = 1e6 µs per core-second. Uncached
            # (`system_info_cache_ms: 0`): N × (Σ other kinds + rate(system info) × (a + b × N)).
            r_si = rates.get("system info", 0.0)
            fixed = sum(r * cost[k] for k, r in rates.items() if k != "system info")
            if cached:
                per_node = fixed + r_si * hit + (b / window_s if r_si else 0.0)
                return (1e6 - (a / window_s if r_si else 0.0)) / per_node
            qa, qb = r_si * b, fixed + r_si * a
            return (-qb + (qb * qb + 4 * qa * 1e6) ** 0.5) / (2 * qa) if qa > 0 else 1e6 / qb

        tabs = ui_demand_per_node()["tabs_per_node"]
        no_overview = {k: v for k, v in rates.items() if k != "system info"}
        out["per_kind"] = {"cost_us": cost, "system_info_a_us": a, "system_info_b_us_per_node": b,
                           "system_info_uncached_us": c_small, "system_info_reused_us": hit,
                           "rates_per_node": rates, "nodes_per_core": nodes_per_core(rates),
                           "nodes_per_core_uncached": nodes_per_core(rates, cached=False),
                           # every tab on the Overview (1 req/s each): the worst case
                           "nodes_per_core_worst": nodes_per_core({"system info": tabs}),
                           "nodes_per_core_worst_uncached": nodes_per_core({"system info": tabs}, cached=False),
                           "nodes_per_core_without_overview": nodes_per_core(no_overview)}
    for p in (lb, lbm, lbu, lbb, bp):
        PROCS.stop(p, signal.SIGINT)
    PROCS.stop(fc)
    PROCS.stop(ng)
    PROCS.stop(up)
    R["twocore"] = out


def section_fanout(cfg, work, R):
    sizes, service = cfg["fanout_sizes"], cfg["fanout_service_ms"]
    bots = 10
    fc = start_fake_cluster(work, "fanout-nodes", max(sizes), bots=bots, service_ms=service)
    # `routing.list_cache_ms: 0`: every request is a real fan-out (by default a finished fan-out is
    # reused for 250 ms while nothing changed; the extra "cached" case shows what a polling panel gets).
    routers = {}
    for n in sizes:
        routers[n] = start_router(work, f"router-fanout-{n}", [(u.replace("http://", ""), 300) for u in fc.urls[:n]],
                                  routing={"list_cache_ms": 0})
    big = max(sizes)
    cached = start_router(work, f"router-fanout-{big}-cached", [(u.replace("http://", ""), 300) for u in fc.urls[:big]])
    # Candidate builds (--extra-router NAME=BINARY) over the largest cluster, in the same rounds.
    extras = {name: start_router(work, f"router-fanout-{big}-{name}", [(u.replace("http://", ""), 300)
                                                                     for u in fc.urls[:big]],
                                 binary=b, routing={"list_cache_ms": 0})
              for name, b in cfg["extra_routers"]}
    for n, p in list(routers.items()) + [(big, cached)] + [(big, x) for x in extras.values()]:
        router_bots(p.port, n * bots)
    extra_runs = {name: [] for name in extras}
    rnd = random.Random(7)
    runs = {n: [] for n in sizes}
    node_runs = {n: [] for n in sizes}
    cached_runs = []
    path = "/api/bot/list"
    for r in range(cfg["fanout_rounds"]):
        for n in (sizes if r % 2 == 0 else list(reversed(sizes))):
            p = routers[n]
            res = loadgen(p.port, [path], KEY_HDR, cfg["fanout_secs"], conns=1, warmup=0, pid=p.pid)
            res["round"] = r
            res["router_cpu_us_per_request"] = 1e6 * res["proxy_cpu_s"] / max(1, res["requests"])
            runs[n].append(res)
            # The same request straight to (a sample of) this router's nodes: the slowest one.
            sample = rnd.sample(range(n), min(n, cfg["fanout_node_sample"]))
            per_node = []
            for i in sample:
                port = int(fc.urls[i].rsplit(":", 1)[1])
                nr = loadgen(port, [path], NODE_HDR, cfg["fanout_node_secs"], conns=1, warmup=0.1)
                per_node.append({"node": i, "p50": nr["lat_us"]["p50"], "p99": nr["lat_us"]["p99"]})
            # The same request to all n nodes at once from one client on the router's core (the
            # router idle meanwhile): how long the nodes take when asked together, as a fan-out
            # asks them (they share one core, so asked together they answer later than one alone).
            ports = [int(u.rsplit(":", 1)[1]) for u in fc.urls[:n]]
            direct = loadgen(ports[0], [path], NODE_HDR, cfg["fanout_secs"], conns=1, warmup=0.2, cpu=PROXY_CPU,
                             fanout=ports[1:])
            if direct["errors"] or direct["io_errors"]:
                raise RuntimeError(f"direct fan-out over {n} nodes: errors {direct}")
            node_runs[n].append({"round": r, "nodes": per_node, "max_p50": max(x["p50"] for x in per_node),
                                 "max_p99": max(x["p99"] for x in per_node),
                                 "direct_p50": direct["lat_us"]["p50"], "direct_p99": direct["lat_us"]["p99"],
                                 "direct_client_cpu0": direct["cpu0"],
                                 # The client's own CPU per fan-out over the measured rounds: every
                                 # node's send and receive, nothing else (what any fan-out over these
                                 # nodes costs at the least). One node: loadgen's closed loop, no figure.
                                 "direct_cpu_us": direct.get("cpu_us_per_request")})
            if res["errors"] or res["io_errors"]:
                raise RuntimeError(f"fan-out over {n} nodes: errors {res}")
        for name, x in extras.items():
            res = loadgen(x.port, [path], KEY_HDR, cfg["fanout_secs"], conns=1, warmup=0, pid=x.pid)
            res["round"] = r
            res["router_cpu_us_per_request"] = 1e6 * res["proxy_cpu_s"] / max(1, res["requests"])
            extra_runs[name].append(res)
        res = loadgen(cached.port, [path], KEY_HDR, cfg["fanout_secs"], conns=1, warmup=0, pid=cached.pid)
        res["round"] = r
        cached_runs.append(res)
        log("fanout round %d: %s" % (r, ", ".join(
            f"{n} nodes p50 {runs[n][-1]['lat_us']['p50']:.0f}us (node max {node_runs[n][-1]['max_p50']:.0f}us)"
            for n in sizes)))
    out = {"bots_per_node": bots, "service_ms": service, "runs": runs, "node_runs": node_runs, "by_nodes": {},
           "cached_nodes": big, "cached_runs": cached_runs,
           "cached_p50_us": stats([x["lat_us"]["p50"] for x in cached_runs]),
           "cached_p99_us": stats([x["lat_us"]["p99"] for x in cached_runs])}
    for n in sizes:
        out["by_nodes"][n] = {
            "router_p50_us": stats([x["lat_us"]["p50"] for x in runs[n]]),
            "router_p99_us": stats([x["lat_us"]["p99"] for x in runs[n]]),
            "node_max_p50_us": stats([x["max_p50"] for x in node_runs[n]]),
            "node_max_p99_us": stats([x["max_p99"] for x in node_runs[n]]),
            "over_slowest_p50_us": stats([x["lat_us"]["p50"] - y["max_p50"] for x, y in zip(runs[n], node_runs[n])]),
            "over_slowest_p99_us": stats([x["lat_us"]["p99"] - y["max_p99"] for x, y in zip(runs[n], node_runs[n])]),
            "direct_p50_us": stats([y["direct_p50"] for y in node_runs[n]]),
            "direct_p99_us": stats([y["direct_p99"] for y in node_runs[n]]),
            "over_direct_p50_us": stats([x["lat_us"]["p50"] - y["direct_p50"] for x, y in zip(runs[n], node_runs[n])]),
            "direct_cpu_us_per_request": stats([y["direct_cpu_us"] for y in node_runs[n]]),
            "router_cpu_us_per_request": stats([x["router_cpu_us_per_request"] for x in runs[n]]),
        }
    # A candidate against the router under test, per round (the router's run of the same round).
    out["extras"] = {}
    for name, xr in extra_runs.items():
        out["extras"][name] = {
            "p50_us": stats([x["lat_us"]["p50"] for x in xr]),
            "cpu_us_per_request": stats([x["router_cpu_us_per_request"] for x in xr]),
            "router_over_candidate_cpu": stats([a["router_cpu_us_per_request"] / b["router_cpu_us_per_request"]
                                                for a, b in zip(runs[big], xr)]),
            "router_minus_candidate_p50_us": stats([a["lat_us"]["p50"] - b["lat_us"]["p50"]
                                                    for a, b in zip(runs[big], xr)]),
        }
        log(f"fanout candidate {name} over {big} nodes: CPU router/candidate "
            f"{fmt_s(out['extras'][name]['router_over_candidate_cpu'], 3)}, p50 router - candidate "
            f"{fmt_s(out['extras'][name]['router_minus_candidate_p50_us'], 0)} us")
    for p in list(routers.values()) + [cached] + list(extras.values()):
        PROCS.stop(p, signal.SIGINT)
    PROCS.stop(fc)
    R["fanout"] = out


def section_scaling(cfg, work, R):
    sizes, service, conc = cfg["scaling_sizes"], cfg["scaling_service_ms"], cfg["scaling_concurrency"]
    per_slot = 2  # connections per node slot: every node always has a queue
    fc = start_fake_cluster(work, "scaling-nodes", max(sizes), bots=conc, service_ms=service, max_conc=conc)
    addrs = [u.replace("http://", "") for u in fc.urls]
    routers = {n: start_router(work, f"router-scaling-{n}", [(a, 300) for a in addrs[:n]], interval_ms=10000)
               for n in sizes}
    paths = {}
    for n, p in routers.items():
        ids = router_bots(p.port, n * conc)
        paths[n] = [f"/api/bot/use/{g}/(/volume)" for g in ids]
    direct_port = int(addrs[0].rsplit(":", 1)[1])
    direct_paths = [f"/api/bot/use/{i}/(/volume)" for i in range(conc)]
    cases = ["direct 1"] + [f"router {n}" for n in sizes]
    runs = {c: [] for c in cases}
    secs = cfg["scaling_secs"]
    for r in range(cfg["scaling_rounds"]):
        for c in (cases if r % 2 == 0 else list(reversed(cases))):
            if c == "direct 1":
                res = loadgen(direct_port, direct_paths, NODE_HDR, secs, conns=per_slot * conc, per_conn=True)
            else:
                n = int(c.split()[1])
                res = loadgen(routers[n].port, paths[n], KEY_HDR, secs, conns=per_slot * conc * n, per_conn=True,
                              pid=routers[n].pid)
            res["round"] = r
            runs[c].append(res)
            if res["errors"] or res["io_errors"]:
                raise RuntimeError(f"scaling {c}: errors {res}")
        log("scaling round %d: %s" % (r, ", ".join(f"{c} {runs[c][-1]['rps']:.0f}/s" for c in cases)))
    out = {"service_ms": service, "max_concurrency": conc, "ideal_node_rps": conc * 1000.0 / service,
           "runs": runs, "by_nodes": {}}
    for n in sizes:
        c = f"router {n}"
        out["by_nodes"][n] = {
            "rps": stats([x["rps"] for x in runs[c]]),
            "efficiency": stats([x["rps"] / (n * d["rps"]) for x, d in zip(runs[c], runs["direct 1"])]),
            "efficiency_vs_router1": stats([x["rps"] / (n * d["rps"]) for x, d in zip(runs[c], runs[f"router {sizes[0]}"])]),
            "p99_us": stats([x["lat_us"]["p99"] for x in runs[c]]),
            "router_cpu": stats([x.get("proxy_cpu") for x in runs[c]]),
        }
    out["direct_rps"] = stats([x["rps"] for x in runs["direct 1"]])
    for p in routers.values():
        PROCS.stop(p, signal.SIGINT)
    PROCS.stop(fc)
    R["scaling"] = out


def section_placement(cfg, work, R):
    caps = cfg["placement_caps"]
    creates = cfg["placement_creates"]
    fc = start_fake_cluster(work, "placement-nodes", len(caps), bots=0, workers=1)
    addrs = [u.replace("http://", "") for u in fc.urls]
    lb = start_router(work, "router-placement", list(zip(addrs, caps)))
    router_bots(lb.port, 0)
    res = loadgen(lb.port, ["/api/bot/connect/to/ts.example.com"], KEY_HDR, 600, conns=64, warmup=0,
                  requests=creates, pid=lb.pid)
    counts = []
    for a in addrs:
        st, body = http_get(int(a.rsplit(":", 1)[1]), "/api/bot/list", NODE_HDR)
        counts.append(len(json.loads(body)))
    total_cap = sum(caps)
    placed = sum(counts)
    fair = [placed * c / total_cap for c in caps]
    dev = [cnt - f for cnt, f in zip(counts, fair)]
    routed = router_bots(lb.port)
    out = {"creates": creates, "concurrency": 64, "capacities": caps, "counts": counts, "fair": fair,
           "deviation_bots": dev, "max_abs_deviation_bots": max(abs(d) for d in dev),
           "max_rel_deviation": max(abs(d) / f for d, f in zip(dev, fair)),
           "fill": [cnt / c for cnt, c in zip(counts, caps)], "ok": res["ok"], "errors": res["errors"],
           "status": res["status"], "creates_per_s": res["rps"], "lat_us": res["lat_us"],
           "router_cpu": res.get("proxy_cpu"), "router_knows": len(routed), "nodes_report": placed}
    log(f"placement: {counts} fair {[round(f) for f in fair]}, {res['rps']:.0f} creates/s, errors {res['errors']}")
    PROCS.stop(lb, signal.SIGINT)
    PROCS.stop(fc)
    R["placement"] = out


def section_scale(cfg, work, R):
    nodes, bots = cfg["scale_nodes"], cfg["scale_bots"]
    t0 = time.time()
    fc = start_fake_cluster(work, "scale-nodes", nodes, bots=bots)
    addrs = [u.replace("http://", "") for u in fc.urls]
    lb = start_router(work, "router-scale", [(a, bots) for a in addrs])
    rss_start = rss_kib(lb.pid)
    ids = router_bots(lb.port, nodes * bots, timeout=300)
    known_after = time.time() - t0
    time.sleep(cfg["scale_settle"])
    c0, w0 = proc_cpu(lb.pid), time.time()
    time.sleep(cfg["scale_idle_secs"])
    idle_cpu = 100.0 * (proc_cpu(lb.pid) - c0) / (time.time() - w0)
    rss = rss_kib(lb.pid)
    log(f"scale: {len(ids)} bots known after {known_after:.1f}s; RSS {rss['VmRSS'] / 1024:.1f} MiB "
        f"(peak {rss['VmHWM'] / 1024:.1f}); idle CPU {idle_cpu:.1f}%")
    rnd = random.Random(11)
    gids = ids[:]
    rnd.shuffle(gids)
    router_paths = [f"/api/bot/use/{g}/(/volume)" for g in gids]
    lids = list(range(bots))
    rnd.shuffle(lids)
    direct_paths = [f"/api/bot/use/{i}/(/volume)" for i in lids]
    direct_port = int(addrs[0].rsplit(":", 1)[1])
    rate = cfg["scale_rate"]
    runs = {"direct": [], "router": []}
    for r in range(cfg["scale_rounds"]):
        for c in (["direct", "router"] if r % 2 == 0 else ["router", "direct"]):
            if c == "direct":
                res = loadgen(direct_port, direct_paths, NODE_HDR, cfg["scale_secs"], conns=32, rate=rate, work=work)
            else:
                res = loadgen(lb.port, router_paths, KEY_HDR, cfg["scale_secs"], conns=32, rate=rate, work=work,
                              pid=lb.pid)
            res["round"] = r
            runs[c].append(res)
            if res["errors"] or res["io_errors"]:
                raise RuntimeError(f"scale {c}: errors {res}")
        log("scale round %d @%d/s: %s" % (r, rate, ", ".join(
            f"{c} p50 {runs[c][-1]['lat_us']['p50']:.0f}us p99 {runs[c][-1]['lat_us']['p99']:.0f}us" for c in runs)))
    rss_end = rss_kib(lb.pid)
    out = {"nodes": nodes, "bots_per_node": bots, "bots_known": len(ids), "seconds_to_know_all": known_after,
           "rss_start_kib": rss_start, "rss_kib": rss, "rss_after_load_kib": rss_end, "idle_cpu_percent": idle_cpu,
           "rate": rate, "runs": runs,
           "latency": {c: {q: stats([x["lat_us"][q] for x in runs[c]]) for q in ("p50", "p90", "p99", "p999")}
                       for c in runs},
           "added_us": {q: stats([x["lat_us"][q] - y["lat_us"][q] for x, y in zip(runs["router"], runs["direct"])])
                        for q in ("p50", "p90", "p99")}}
    PROCS.stop(lb, signal.SIGINT)
    PROCS.stop(fc)
    R["scale"] = out


def node_identities(port, lids):
    """local id -> identity key, read from a node directly."""
    out = {}
    for lid in lids:
        st, body = http_get(port, f"/api/bot/use/{lid}/(/settings/get/connect.identity)", NODE_HDR)
        if st == 200:
            out[lid] = json.loads(body)["key"]
    return out


def node_lids(port):
    st, body = http_get(port, "/api/bot/list", NODE_HDR)
    return [b["Id"] for b in json.loads(body) if b.get("Id") is not None] if st == 200 else []


def section_failover(cfg, work, R):
    bots = 300
    victim = start_fake_node(work, "failover-victim", bots)
    fc = start_fake_cluster(work, "failover-spares", 2, bots=0)
    spares = [u.replace("http://", "") for u in fc.urls]
    vport = int(victim.url.rsplit(":", 1)[1])
    # failover.after_ms 0: the router moves the bots as soon as it declares the node down, so the
    # decision is the moment the node's bots start answering 503 (measured below).
    lb = start_router(work, "router-failover", [(victim.url.replace("http://", ""), 300)] + [(a, 300) for a in spares],
                      interval_ms=cfg["failover_interval_ms"], extra=["failover: {after_ms: 0}"])
    ids = router_bots(lb.port, bots)
    sample = ids[:: max(1, len(ids) // 10)]
    before = node_identities(vport, node_lids(vport))
    # The 300 bots were already running when the router started: it reads their identities in
    # the background (64 per 200 ms); give it that time before the crash.
    time.sleep(cfg["failover_identity_wait"])
    log(f"failover: router knows {len(ids)} bots on the victim; killing it (SIGKILL)")
    t_kill = time.time()
    PROCS.stop(victim, signal.SIGKILL)
    t_decision = None
    t_all = None
    moved = 0
    last = {}
    deadline = t_kill + cfg["failover_wait"]
    while time.time() < deadline:
        now = time.time()
        answers = []
        for g in sample:
            try:
                st, body = http_get(lb.port, f"/api/bot/use/{g}/(/bot/info)", KEY_HDR, timeout=5)
            except OSError:
                st, body = 0, b""
            answers.append((st, body))
        last = {"status": [a[0] for a in answers], "body": answers[0][1][:300].decode(errors="replace")}
        if t_decision is None and any(st == 503 and b"not reachable right now" in body for st, body in answers):
            t_decision = now
            log(f"failover: router marked the node down {now - t_kill:.2f}s after the kill")
        # Bots running elsewhere: what the spare nodes themselves report.
        moved = sum(len(node_lids(int(a.rsplit(":", 1)[1]))) for a in spares)
        if moved >= bots and all(a[0] == 200 for a in answers):
            t_all = now
            if t_decision is None:
                # Moved before a sampled request ever saw the 503 window.
                t_decision = now
            break
        if t_decision is not None and now > t_decision + cfg["failover_after_decision"]:
            break
        time.sleep(0.05)
    after = {}
    for a in spares:
        port = int(a.rsplit(":", 1)[1])
        after.update({k: port for k in node_identities(port, node_lids(port)).values()})
    kept = sum(1 for k in before.values() if k in after)
    out = {"bots": bots, "poll_interval_ms": cfg["failover_interval_ms"],
           "decision_after_kill_s": (t_decision - t_kill) if t_decision else None,
           "all_running_elsewhere_after_decision_s": (t_all - t_decision) if (t_all and t_decision) else None,
           "all_running_elsewhere_after_kill_s": (t_all - t_kill) if t_all else None,
           "running_elsewhere_at_end": moved, "identities_kept": kept, "identities_before": len(before),
           "waited_after_decision_s": cfg["failover_after_decision"],
           "last_answers": last, "implemented": t_all is not None}
    if t_all is None:
        out["note"] = (f"{moved}/{bots} bots run elsewhere {cfg['failover_after_decision']} s after the node was "
                       f"marked down ({out['decision_after_kill_s']:.1f} s after the kill)" if t_decision else
                       "the router did not mark the node down within the wait")
    else:
        out["note"] = (f"{kept}/{len(before)} bots kept their TeamSpeak identity")
    log(f"failover: {out['note']}")
    PROCS.stop(lb, signal.SIGINT)
    PROCS.stop(fc)
    R["failover"] = out




class KeepAlive:
    """One keep-alive HTTP/1.1 connection, reopened after any error (polling many bots fast)."""

    def __init__(self, port, timeout=5.0):
        self.port, self.timeout, self.c = port, timeout, None

    def get(self, path, auth):
        for attempt in (0, 1):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                self.c.putrequest("GET", path, skip_accept_encoding=True)
                self.c.putheader("Authorization", auth)
                self.c.endheaders()
                r = self.c.getresponse()
                body = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return r.status, body
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    return 0, b""
        return 0, b""

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def fake_state(port):
    """A fake node's own `/__fake/state` (None when it does not answer)."""
    try:
        st, body = http_get(port, "/__fake/state", None, timeout=5)
        return json.loads(body) if st == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


def duplicate_identities(state):
    """Identity keys that more than one bot of the node runs under: {key prefix: count}."""
    seen = {}
    for b in (state or {}).get("bots", []):
        k = b.get("identity_key")
        if k:
            seen[k] = seen.get(k, 0) + 1
    return {k[:12]: n for k, n in seen.items() if n > 1}


def restart_round(cfg, work, rnd):
    """One node restart: a fresh node (data dir), router and 300 bots; SIGKILL, restart after 1 s."""
    total, n_tpl = cfg["restart_bots"], cfg["restart_templates"]
    templates = [f"keep{i:02d}" for i in range(n_tpl)]
    data = work / f"restart-{rnd}-data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [str(REL / "ts3ab-fake-node"), "--listen", f"127.0.0.1:{port}", "--name", "restart-node",
            "--auth", NODE_AUTH, "--anonymous", "none", "--data-dir", str(data)]
    for t in templates:
        argv += ["--template", f"{t}:run"]

    def start_node(tag):
        p = PROCS.start(f"restart-node-{rnd}-{tag}", argv, cpu=LOAD_CPU, log_path=work / f"restart-node-{rnd}.log",
                        stdout_pipe=True)
        read_lines(p, lambda ls: any(l.startswith("listening on ") for l in ls), timeout=30)
        return p

    node = start_node("a")
    # As shipped: health.interval_ms 2000, failover enabled with after_ms 30000 (a restart within
    # 1 s is never an evacuation), 16 rebuilds at once.
    lb = start_router(work, f"router-restart-{rnd}", [(f"127.0.0.1:{port}", total)],
                      interval_ms=cfg["restart_interval_ms"])
    router_bots(lb.port, n_tpl)
    for _ in range(total - n_tpl):
        st, body = http_get(lb.port, "/api/bot/connect/to/ts.example.com", KEY_HDR)
        if st != 200:
            raise RuntimeError(f"restart: create answered {st} {body[:200]}")
    gids = router_bots(lb.port, total)
    if len(gids) != total:
        raise RuntimeError(f"restart: router knows {len(gids)} bots, wanted {total}")
    ka = KeepAlive(lb.port)

    def key_of(gid):
        st, body = ka.get(f"/api/bot/use/{gid}/(/settings/get/connect.identity.key)", ADMIN_HDR)
        return st, body

    # Every identity readable through the router (admin), then time for the router's own reads
    # (created bots: once after the create; adopted templates: the background sweep).
    before, end = {}, time.time() + 60
    while len(before) < total and time.time() < end:
        for g in gids:
            if g not in before:
                st, body = key_of(g)
                if st == 200 and body.strip() not in (b"", b'""', b"null"):
                    before[g] = body
        if len(before) < total:
            time.sleep(0.2)
    if len(before) < total:
        raise RuntimeError(f"restart: only {len(before)}/{total} identities answer through the router")
    time.sleep(cfg["restart_identity_wait"])
    st0 = fake_state(port) or {}
    node_before = len(st0.get("bots", []))
    start_before = st0.get("starttime")
    router_log = work / f"router-restart-{rnd}" / "router.log"
    log_mark = router_log.stat().st_size

    log(f"restart round {rnd}: {len(gids)} bots ({n_tpl} run=true templates), node lists {node_before}; SIGKILL")
    t_kill = time.time()
    PROCS.stop(node, signal.SIGKILL)
    time.sleep(cfg["restart_down_s"])
    t_start = time.time()
    node = start_node("b")
    t_listen = time.time()
    confirmed, wrong, statuses, max_dups, t_seen = {}, set(), {}, {}, None
    deadline = t_listen + cfg["restart_wait"]
    while len(confirmed) < total and time.time() < deadline:
        for g in gids:
            if g in confirmed:
                continue
            st, body = key_of(g)
            statuses[st] = statuses.get(st, 0) + 1
            if st == 200 and body == before[g]:
                confirmed[g] = time.time()
                wrong.discard(g)
            elif st == 200:
                wrong.add(g)
        if t_seen is None:
            with open(router_log, "rb") as f:
                f.seek(log_mark)
                if b"restarted (start time" in f.read():
                    t_seen = time.time()
        d = duplicate_identities(fake_state(port))
        for k, n in d.items():
            max_dups[k] = max(max_dups.get(k, 0), n)
        time.sleep(0.05)
    t_all = max(confirmed.values()) if len(confirmed) == total else None
    # Check once more that nothing went back and that the node runs every identity once.
    final_ok = sum(1 for g in gids if key_of(g) == (200, before[g]))
    st1 = fake_state(port) or {}
    d = duplicate_identities(st1)
    for k, n in d.items():
        max_dups[k] = max(max_dups.get(k, 0), n)
    keys_on_node = {b.get("identity_key") for b in st1.get("bots", [])}
    def as_key(body):
        try:
            v = json.loads(body)
        except ValueError:
            return None
        return v if isinstance(v, str) else None

    orig_on_node = sum(1 for v in before.values() if as_key(v) in keys_on_node)
    ka.close()
    out = {"bots": total, "templates_run_true": n_tpl, "temporary": total - n_tpl, "down_s": t_start - t_kill,
           "kill_to_listening_s": t_listen - t_kill,
           "all_back_after_listening_s": (t_all - t_listen) if t_all else None,
           "all_back_after_kill_s": (t_all - t_kill) if t_all else None,
           "first_back_after_listening_s": (min(confirmed.values()) - t_listen) if confirmed else None,
           "router_logged_restart_after_listening_s": (t_seen - t_listen) if t_seen else None,
           "back_with_identity": len(confirmed), "back_with_other_identity": len(wrong),
           "final_check_ok": final_ok, "node_bots_before": node_before, "node_bots_after": len(st1.get("bots", [])),
           "original_identities_on_node": orig_on_node, "identities_twice": max_dups,
           "starttime_changed": bool(start_before and st1.get("starttime") and start_before != st1["starttime"]),
           "router_answers": {str(k): v for k, v in sorted(statuses.items())}}
    log(f"restart round {rnd}: " + (f"all {total} back {out['all_back_after_listening_s']:.2f}s after the node listened "
        f"again ({out['all_back_after_kill_s']:.2f}s after the kill)" if t_all else f"{len(confirmed)}/{total} back") +
        f"; identities twice: {len(max_dups)}; node lists {out['node_bots_after']}")
    PROCS.stop(lb, signal.SIGINT)
    PROCS.stop(node)
    return out


def section_restart(cfg, work, R):
    rounds = [restart_round(cfg, work, r) for r in range(cfg["restart_rounds"])]

    def st(k):
        return stats([x[k] for x in rounds])

    R["restart"] = {"rounds": rounds, "bots": cfg["restart_bots"], "templates_run_true": cfg["restart_templates"],
                    "poll_interval_ms": cfg["restart_interval_ms"], "down_s": cfg["restart_down_s"],
                    "all_back_after_listening_s": st("all_back_after_listening_s"),
                    "all_back_after_kill_s": st("all_back_after_kill_s"),
                    "first_back_after_listening_s": st("first_back_after_listening_s"),
                    "router_logged_restart_after_listening_s": st("router_logged_restart_after_listening_s"),
                    "back_with_identity": [x["back_with_identity"] for x in rounds],
                    "identities_twice": sum(len(x["identities_twice"]) for x in rounds),
                    "complete": all(x["all_back_after_listening_s"] is not None and x["final_check_ok"] == x["bots"]
                                    for x in rounds)}


def mongo_server(work):
    """A MongoDB wire server for the store section: TS3AB_BENCH_MONGODB_URI when set (a real
    MongoDB), else nx-27017 from a venv under the target dir, on a file database in `work`."""
    uri = os.environ.get("TS3AB_BENCH_MONGODB_URI", "").strip()
    if uri:
        return uri, "MongoDB at TS3AB_BENCH_MONGODB_URI", None
    venv = TARGET / "bench-mongo-venv"
    if not (venv / ".ready-nx-27017-0.8.1").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                        "nx-27017==0.8.1"], check=True)
        (venv / ".ready-nx-27017-0.8.1").write_text("ok")
    # A fresh server (and file) for every measurement: nx-27017 slows down as its one SQLite
    # file grows, which would make later rounds slower than earlier ones.
    n = len(list(work.glob("nx-27017-*.log")))
    logf = work / f"nx-27017-{n}.log"
    p = PROCS.start(f"nx-27017-{n}", [str(venv / "bin" / "nx-27017"), "--db", str(work / f"nx-27017-{n}.db"), "-p",
                                      "0", "--log-file", str(logf), "--pid-file", str(work / f"nx-27017-{n}.pid")],
                    cpu=LOAD_CPU, log_path=work / f"nx-27017-{n}.out")
    end = time.time() + 60
    while time.time() < end:
        for f in (logf, work / f"nx-27017-{n}.out"):
            m = re.search(r"Listening on [\d.]+:(\d+)", f.read_text() if f.exists() else "")
            if m:
                return (f"mongodb://127.0.0.1:{m.group(1)}/",
                        "nx-27017 0.8.1 (Python + SQLite, one process, a fresh file per measurement)", p)
        time.sleep(0.1)
    raise RuntimeError("nx-27017 did not start")


def section_store(cfg, work, R):
    """Creates per second and their latency on each store, side by side in interleaved rounds,
    and how soon a second router on the same database routes a bot the first one created."""
    server = None
    rounds, creates = cfg["store_rounds"], cfg["store_creates"]
    runs = {"embedded": [], "mongodb": []}
    for rnd in range(rounds):
        for kind in ("embedded", "mongodb"):
            fc = start_fake_cluster(work, f"store-nodes-{kind}-{rnd}", 4, bots=0, workers=1)
            addrs = [u.replace("http://", "") for u in fc.urls]
            storage, db_proc = None, None
            if kind == "mongodb":
                uri, server, db_proc = mongo_server(work)
                storage = f'{{kind: mongodb, uri: "{uri}", database: "bench_{rnd}"}}'
            lb = start_router(work, f"router-store-{kind}-{rnd}", [(a, creates) for a in addrs], storage=storage)
            router_bots(lb.port, 0)
            res = loadgen(lb.port, ["/api/bot/connect/to/ts.example.com"], KEY_HDR, 600, conns=16, warmup=0,
                          requests=creates, pid=lb.pid)
            runs[kind].append({"creates_per_s": res["rps"], "p50_ms": res["lat_us"]["p50"] / 1000,
                               "p99_ms": res["lat_us"]["p99"] / 1000, "ok": res["ok"], "errors": res["errors"],
                               "router_cpu": res.get("proxy_cpu")})
            log(f"store {kind} round {rnd}: {res['rps']:.0f} creates/s, p50 {res['lat_us']['p50'] / 1000:.1f} ms, "
                f"errors {res['errors']}")
            PROCS.stop(lb, signal.SIGINT)
            PROCS.stop(fc)
            if db_proc:
                PROCS.stop(db_proc)

    # Sync delay: router A creates, router B (same database, polls off) routes the new id.
    fc = start_fake_cluster(work, "store-sync-nodes", 2, bots=0, workers=1)
    addrs = [u.replace("http://", "") for u in fc.urls]
    uri, server, db_proc = mongo_server(work)
    db = "bench_sync"
    storage = f'{{kind: mongodb, uri: "{uri}", database: "{db}", sync_interval_ms: {cfg["store_sync_ms"]}}}'
    a = start_router(work, "router-sync-a", [(x, 10000) for x in addrs], interval_ms=60000, storage=storage)
    b = start_router(work, "router-sync-b", [(x, 10000) for x in addrs], interval_ms=60000, storage=storage)
    delays = []
    for i in range(cfg["store_sync_samples"]):
        st, body = http_get(a.port, f"/api/bot/connect/to/sync{i}.example.com", KEY_HDR)
        if st != 200:
            raise RuntimeError(f"store: create on router A answered {st} {body[:200]}")
        gid = json.loads(body)["Id"]
        t0 = time.time()
        while True:
            st, _ = http_get(b.port, f"/api/bot/use/{gid}/(/bot/info)", KEY_HDR)
            if st == 200:
                delays.append(time.time() - t0)
                break
            if time.time() - t0 > 30:
                raise RuntimeError(f"store: router B did not route bot {gid} within 30 s")
            time.sleep(0.01)
        # Spread the samples over the sync interval's phase.
        time.sleep(random.uniform(0, cfg["store_sync_ms"] / 1000))
    PROCS.stop(a, signal.SIGINT)
    PROCS.stop(b, signal.SIGINT)
    PROCS.stop(fc)
    if db_proc:
        PROCS.stop(db_proc)

    def st(kind, k):
        return stats([x[k] for x in runs[kind]])

    ratios = [m["creates_per_s"] / e["creates_per_s"] for e, m in zip(runs["embedded"], runs["mongodb"])]
    added = [m["p50_ms"] - e["p50_ms"] for e, m in zip(runs["embedded"], runs["mongodb"])]
    ds = sorted(delays)
    R["store"] = {"server": server, "rounds": rounds, "creates": creates, "concurrency": 16, "runs": runs,
                  "creates_per_s": {k: st(k, "creates_per_s") for k in runs},
                  "p50_ms": {k: st(k, "p50_ms") for k in runs}, "p99_ms": {k: st(k, "p99_ms") for k in runs},
                  "mongodb_vs_embedded": stats(ratios), "added_p50_ms": stats(added),
                  "sync_interval_ms": cfg["store_sync_ms"], "sync_samples": len(ds),
                  "sync_delay_s": {"median": statistics.median(ds), "p90": ds[int(0.9 * (len(ds) - 1))],
                                   "max": ds[-1], "min": ds[0]}}
    log(f"store: mongodb/embedded creates {statistics.median(ratios):.2f}x, sync delay median "
        f"{statistics.median(ds) * 1000:.0f} ms, max {ds[-1] * 1000:.0f} ms")


def section_micro(cfg, work, R):
    crit = TARGET / "criterion"
    t0 = time.time()
    argv = pinned(PROXY_CPU) + ["cargo", "bench", "--bench", "micro", "--", "--noplot"]
    if cfg["micro_quick"]:
        argv += ["--warm-up-time", "1", "--measurement-time", "2"]
    with open(work / "micro.log", "w") as f:
        r = subprocess.run(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"cargo bench failed, see {work / 'micro.log'}")
    out = {}
    for bj in glob.glob(str(crit / "**" / "new" / "benchmark.json"), recursive=True):
        if os.path.getmtime(bj) < t0:
            continue
        meta = json.load(open(bj))
        est = json.load(open(Path(bj).with_name("estimates.json")))
        out[meta["full_id"]] = {"median_ns": est["median"]["point_estimate"],
                                "low_ns": est["median"]["confidence_interval"]["lower_bound"],
                                "high_ns": est["median"]["confidence_interval"]["upper_bound"],
                                "mean_ns": est["mean"]["point_estimate"]}
    log("micro: " + ", ".join(f"{k} {v['median_ns']:.0f}ns" for k, v in sorted(out.items())))
    R["micro"] = out


# ---- report ------------------------------------------------------------------------------------


def targets_table(R):
    rows = []

    def add(name, goal, value, ok, note=""):
        rows.append((name, goal, value, "n/a" if ok is None else ("**pass**" if ok else "**FAIL**"), note))

    p = R.get("proxy")
    if p:
        rb = p["ratios"]["router/bare"]
        add("Router logic nearly free", "router/bare Pingora ≥ 0.95 req/s", fmt_s(rb, 3), rb["median"] >= 0.95)
        rm = p["ratios"].get("router/router metrics off")
        if rm:
            # "No measurable cost": within the run-to-run spread, taken as 2 %.
            add("Metrics cost nothing measurable", "router/router with metrics off ≥ 0.98 req/s", fmt_s(rm, 3),
                rm["median"] >= 0.98, f"{int(p.get('metrics_recorded_pinned', 0)):,} requests recorded")
        rn = p["ratios"]["router/nginx"]
        add("As fast as nginx", "router/nginx ≥ 1.0 req/s (same core)", fmt_s(rn, 3), rn["median"] >= 1.0,
            f"bare Pingora/nginx {fmt_s(p['ratios']['bare/nginx'], 3)}")
        a = p["added_latency_us"]["router - direct"]["p99"]
        add("Added p99 latency", f"≤ 0.5 ms over direct @ {p['latency_rate']:,}/s", fmt_s(a, 3, 0.001) + " ms",
            a["median"] <= 500, f"p50 +{fmt_s(p['added_latency_us']['router - direct']['p50'], 3, 0.001)} ms")
    f = R.get("fanout")
    if f:
        big = max(f["by_nodes"], key=int)
        b = f["by_nodes"][big]
        add(f"bot/list over {big} nodes", "p50 ≤ slowest node + 1 ms", fmt_s(b["over_slowest_p50_us"], 2, 0.001) +
            " ms over", b["over_slowest_p50_us"]["median"] <= 1000,
            f"router p50 {fmt_s(b['router_p50_us'], 2, 0.001)} ms; p99 {fmt_s(b['over_slowest_p99_us'], 2, 0.001)} ms over")
        if "over_direct_p50_us" in b:
            add(f"bot/list over {big} nodes, against all nodes asked at once", "p50 ≤ direct fan-out + 1 ms",
                fmt_s(b["over_direct_p50_us"], 2, 0.001) + " ms over", b["over_direct_p50_us"]["median"] <= 1000,
                f"direct fan-out p50 {fmt_s(b['direct_p50_us'], 2, 0.001)} ms; router CPU "
                f"{fmt_s(b['router_cpu_us_per_request'], 2, 0.001)} ms per request")
    s = R.get("scaling")
    if s:
        worst = min(s["by_nodes"].items(), key=lambda kv: kv[1]["efficiency"]["median"])
        add("Scaling efficiency", f"≥ 0.95 up to {max(s['by_nodes'], key=int)} nodes",
            f"min {fmt(worst[1]['efficiency']['median'], 3)} (at {worst[0]} nodes)",
            worst[1]["efficiency"]["median"] >= 0.95)
    m = R.get("micro")
    if m:
        for k in sorted(m):
            if k.startswith("placement reserve/100"):
                add("Placement decision", "< 5 µs (100 nodes)", f"{m[k]['median_ns'] / 1000:.2f} µs",
                    m[k]["median_ns"] < 5000,
                    "; ".join(f"{kk.split('/')[-1]}: {m[kk]['median_ns'] / 1000:.2f} µs" for kk in sorted(m)
                              if kk.startswith("placement")))
    pl = R.get("placement")
    if pl:
        add("Placement fairness", "deviation from fair share (no fixed goal)",
            f"max {pl['max_abs_deviation_bots']:.1f} bots ({100 * pl['max_rel_deviation']:.2f} %)", None,
            f"{pl['ok']} of {pl['creates']} creates ok, {pl['creates_per_s']:.0f}/s")
    sc = R.get("scale")
    if sc:
        mib = sc["rss_kib"]["VmRSS"] / 1024
        add(f"{sc['bots_known']:,} bots in memory", "< 150 MB RSS", f"{mib:.1f} MiB", mib * 1.048576 < 150,
            f"peak {sc['rss_kib']['VmHWM'] / 1024:.1f} MiB; bot/use +{fmt_s(sc['added_us']['p99'], 3, 0.001)} ms p99")
    fo = R.get("failover")
    if fo:
        if fo["implemented"]:
            v = fo["all_running_elsewhere_after_decision_s"]
            add("Failover of 300 bots", "≤ 10 s after the decision", f"{v:.1f} s",
                v <= 10 and fo["identities_kept"] == fo["identities_before"],
                f"{fo['note']}; node marked down {fo['decision_after_kill_s']:.1f} s after the kill")
        else:
            add("Failover of 300 bots", "≤ 10 s after the decision", "incomplete", False, fo.get("note", ""))
    rs = R.get("restart")
    if rs:
        n = rs["bots"]
        v = rs["all_back_after_listening_s"]
        ok = rs["complete"] and rs["identities_twice"] == 0
        add(f"Node restart, {n} bots", f"all {n} back with their identity, none twice (time: no fixed goal)",
            (fmt_s(v, 1) + " s after the node listened again") if v["median"] is not None else "incomplete", ok,
            f"{fmt_s(rs['all_back_after_kill_s'], 1)} s after the SIGKILL; back {rs['back_with_identity']}; "
            f"identities run twice: {rs['identities_twice']}; poll {rs['poll_interval_ms']} ms")
    so = R.get("store")
    if so:
        d = so["sync_delay_s"]
        limit = so["sync_interval_ms"] / 1000 + 0.5
        add("Sync delay between two routers", f"≤ sync interval ({so['sync_interval_ms']} ms) + 0.5 s",
            f"max {d['max'] * 1000:.0f} ms (median {d['median'] * 1000:.0f} ms)", d["max"] <= limit,
            f"{so['server']}")
        add("Creates on MongoDB", "no fixed goal (reported)", f"{fmt_s(so['mongodb_vs_embedded'], 4)}× embedded",
            True, f"added p50 {fmt_s(so['added_p50_ms'])} ms on {so['server']}")
    return rows


def render_md(R, meta):
    L = []
    L.append(f"# ts3ab-lb benchmark results ({meta['mode']} run, {meta['started']})\n")
    L.append(f"Machine: {meta['cpu']} × {meta['cores']} cores, {meta['mem_gib']} GiB, {meta['kernel']}; "
             f"{meta['rustc']}; {meta['nginx']}; {meta['wrk']}. Load average before/after: "
             f"{meta['load_before']} / {meta.get('load_after', '?')}. Commit: {meta['commit']}.\n")
    L.append("Ratios are per round (interleaved), shown as median (min–max). Proxies run on CPU 0 with one "
             "worker thread; load generators and upstreams on CPU 1.\n")
    q = meta.get("quiet_waits_s")
    if q:
        L.append(f"Before each of the {q['count']} measurements the runner waited for both CPUs to be idle: "
                 f"{q['over_1s']} waited more than 1 s ({q['total']} s in all), {q['timed_out']} gave up after 30 s.\n")
    L.append("## Targets\n")
    L.append("| target | goal | measured | result | notes |")
    L.append("| --- | --- | --- | --- | --- |")
    for row in targets_table(R):
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    p = R.get("proxy")
    if p:
        L.append(f"## Proxy overhead\n\nwrk -t1 -c32, {p['rounds']} interleaved rounds × {p['seconds']} s; "
                 "fast upstream: nginx returning fixed JSON (local bot id 5 = cluster id 0, so the router "
                 "rewrites the id and the Authorization header on every request). `bot/info` answers carry a "
                 "bot id, which the router translates back (buffered byte edit).\n")
        L.append("| target | req/s | proxy process CPU % | CPU0 busy % | CPU1 busy % |")
        L.append("| --- | --- | --- | --- | --- |")
        for n in p["rps"]:
            L.append(f"| {n} | {fmt_s(p['rps'][n], 0)} | {fmt_s(p['proxy_cpu'][n], 0)} | {fmt_s(p['cpu0'][n], 0)} | "
                     f"{fmt_s(p['cpu1'][n], 0)} |")
        L.append("\n| ratio (req/s) | median (min–max) |")
        L.append("| --- | --- |")
        for k, v in p["ratios"].items():
            L.append(f"| {k} | {fmt_s(v, 3)} |")
        L.append(f"\nLatency at a fixed {p['latency_rate']:,} req/s (half the router's saturated rate), open loop, "
                 "32 connections, measured from each request's due time (µs):\n")
        L.append("| target | p50 | p90 | p99 | p99.9 |")
        L.append("| --- | --- | --- | --- | --- |")
        for n, q in p["latency"].items():
            L.append(f"| {n} | {fmt_s(q['p50'], 0)} | {fmt_s(q['p90'], 0)} | {fmt_s(q['p99'], 0)} | "
                     f"{fmt_s(q['p999'], 0)} |")
        if p.get("latency_low"):
            for n, q in p["latency_low"].items():
                L.append(f"| {n} @ {p['latency_low_rate']:,}/s | {fmt_s(q['p50'], 0)} | {fmt_s(q['p90'], 0)} | "
                         f"{fmt_s(q['p99'], 0)} | {fmt_s(q['p999'], 0)} |")
        L.append("\n| added over direct (µs) | p50 | p99 |")
        L.append("| --- | --- | --- |")
        for k, v in p["added_latency_us"].items():
            L.append(f"| {k} | {fmt_s(v['p50'], 0)} | {fmt_s(v['p99'], 0)} |")
        if p.get("latency_ratios"):
            L.append("\n| latency ratio (candidate ÷ router, per round) | p50 | p90 | p99 | p99.9 |")
            L.append("| --- | --- | --- | --- | --- |")
            for k, q in p["latency_ratios"].items():
                L.append(f"| {k} | {fmt_s(q['p50'], 3)} | {fmt_s(q['p90'], 3)} | {fmt_s(q['p99'], 3)} | "
                         f"{fmt_s(q['p999'], 3)} |")
        L.append("")
    k = R.get("knobs")
    if k:
        L.append(f"## Below Pingora's defaults (knobs)\n\nwrk -t1 -c32, {k['rounds']} interleaved rounds × "
                 f"{k['seconds']} s; proxies on CPU 0 with one thread (mimalloc, no-steal runtime), wrk and the "
                 "nginx node on CPU 1, the request of the proxy section. Every row is the same binary as its "
                 "baseline (`bare` or `router`), changed only by the flag or environment its name says "
                 "(see benches/README.md).\n")
        L.append("| target | req/s | proxy CPU % | CPU1 busy % | req/s ÷ its baseline | CPU µs per request | "
                 "CPU per request ÷ its baseline | max steal % | AnonHugePages KiB |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for n in k["rps"]:
            vb = k["vs_baseline"].get(n)
            cb = k.get("cpu_vs_baseline", {}).get(n)
            L.append(f"| {n} | {fmt_s(k['rps'][n], 0)} | {fmt_s(k['proxy_cpu'][n], 0)} | {fmt_s(k['cpu1'][n], 0)} | "
                     f"{fmt_s(vb, 3) if vb else '–'} | {fmt_s(k.get('cpu_us_per_request', {}).get(n), 1)} | "
                     f"{fmt_s(cb, 3) if cb else '–'} | {k.get('steal_max', {}).get(n, 'n/a')} | "
                     f"{k['anon_huge_kib'].get(n, 'n/a')} |")
        L.append("\n| ratio to nginx (req/s, per round) | median (min–max) |")
        L.append("| --- | --- |")
        for n, v in k["vs_nginx"].items():
            L.append(f"| {n}/nginx | {fmt_s(v, 3)} |")
        L.append("")
    t = R.get("twocore")
    if t:
        L.append(f"## Two cores\n\nNothing pinned: every process may use both cores (all at nice -10). "
                 f"Router `server.threads: 2`, nginx 2 workers (`proxy2.conf`, reuseport), bare Pingora 2 "
                 f"threads (mimalloc, no-steal, as the router), in front of the proxy section's nginx node "
                 f"(1 worker). `wrk -t{t['wrk_threads']} -c{t['connections']}`, {t['rounds']} interleaved rounds × "
                 f"{t['seconds']} s. CPU in cores = CPU seconds of the process (nginx: master and workers; "
                 "the generator: from wait4, its threads included) ÷ wall time of the run. The mix rows: the "
                 f"router over {t['mix_nodes']} fake nodes × {t['mix_bots']} bots, `loadgen` with "
                 f"{t['connections']} connections over {t['mix_paths']} paths weighted "
                 + ", ".join(f"{k2} {w}" for k2, w in t["mix_weights"].items()) +
                 f" (per 20), closed loop (saturated) and open loop at {t['mix_rate']:,} req/s (fixed).\n")
        L.append("| target | req/s | proxy cores | load generator cores | upstream cores | machine busy (cores of 2) "
                 "| req/s per proxy core | proxy CPU µs per request |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for n, b in t["rows"].items():
            L.append(f"| {n} | {fmt_s(b['rps'], 0)} | {fmt_s(b['proxy_cores'], 2)} | {fmt_s(b['generator_cores'], 2)} | "
                     f"{fmt_s(b['upstream_cores'], 2)} | {fmt_s(b['machine_cores'], 2)} | "
                     f"{fmt_s(b['rps_per_proxy_core'], 0)} | {fmt_s(b['proxy_cpu_us_per_request'], 1)} |")
        L.append("\n| ratio (per round) | median (min–max) |")
        L.append("| --- | --- |")
        for k2, v in t["ratios"].items():
            L.append(f"| {k2} | {fmt_s(v, 3)} |")
        d = t["demand"]
        L.append(f"\nSizing scenario: {UI_SCENARIO['bots_per_node']} bots per node, one open tab per "
                 f"{UI_SCENARIO['bots_per_tab']} bots ({d['tabs_per_node']:.0f} tabs per node), "
                 f"{100 * (1 - UI_SCENARIO['overview_share']):.0f} % of tabs on a bot's page "
                 f"({d['per_bot_page_tab']:.3f} req/s each), {100 * UI_SCENARIO['overview_share']:.0f} % on the "
                 f"Overview ({d['per_overview_tab']:.1f} req/s each): {d['per_node']:.2f} req/s per node; worst case "
                 f"(every tab polling once per second) {d['per_node_worst']:.0f} req/s per node.\n")
        pk = t.get("per_kind")
        if pk:
            si_big = t["rows"][f"kind system info, {t['mix_nodes_big']} nodes"]["proxy_cpu_us_per_request"]["median"]
            L.append(f"Each kind alone, open loop at {t['kind_rate']:,} req/s (router CPU µs per request; `system info` "
                     "as the shipped router answers it, mostly reused within `routing.system_info_cache_ms`): "
                     + ", ".join(f"{k} {v:.1f}" for k, v in pk["cost_us"].items())
                     + f" (a reused one {pk.get('system_info_reused_us', 0):.1f} once the real fan-outs are taken out)"
                     + f". A real `system info` fan-out (the cache off): {pk['system_info_uncached_us']:.1f} over "
                     f"{t['mix_nodes']} nodes, {si_big:.1f} over {t['mix_nodes_big']}, so {pk['system_info_a_us']:.1f} + "
                     f"{pk['system_info_b_us_per_node']:.1f} µs × nodes. Per node in the scenario: "
                     + ", ".join(f"{k} {v:.2f} req/s" for k, v in pk["rates_per_node"].items())
                     + f". Nodes per router core (N × per-node CPU + one `system info` fan-out per second = 1 core): "
                     f"**{pk['nodes_per_core']:,.0f}**; with `system_info_cache_ms: 0` (every `system info` asks every "
                     f"node) {pk['nodes_per_core_uncached']:,.0f}; without the Overview's `system info` "
                     f"{pk['nodes_per_core_without_overview']:,.0f}; every tab on the Overview "
                     f"{pk['nodes_per_core_worst']:,.0f} ({pk['nodes_per_core_worst_uncached']:,.0f} uncached).\n")
        L.append("| from | router CPU µs per request | req/s per router core | nodes per router core | "
                 "nodes per core, worst case |")
        L.append("| --- | --- | --- | --- | --- |")
        for n, z in t["sizing"].items():
            L.append(f"| {n} | {z['cpu_us_per_request']:.1f} | {z['req_per_s_per_core']:,.0f} | "
                     f"{z['nodes_per_core']:,.0f} | {z['nodes_per_core_worst']:,.0f} |")
        L.append("")
    f = R.get("fanout")
    if f:
        L.append(f"## Fan-out: `bot/list`\n\nOne client, sequential requests, `routing.list_cache_ms: 0`; fake nodes with {f['bots_per_node']} "
                 f"bots each and a {f['service_ms']} ms service time (all nodes share CPU 1). The slowest node is the "
                 "largest p50 (p99) of the same request sent straight to a sample of the router's nodes in the same "
                 "round. All at once = the same request sent to all the router's nodes together by one client on "
                 "the router's core (`loadgen --fanout`, the router idle meanwhile), until the last answer: what the "
                 "nodes take when a fan-out asks them together; its client CPU (user + system, per fan-out) is what "
                 "sending to and reading from that many nodes costs at the least. Router CPU = the router process's "
                 "CPU time per `bot/list` (µs).\n")
        L.append("| nodes | router p50 | router p99 | slowest node p50 | slowest node p99 | router − slowest (p50) "
                 "| router − slowest (p99) | all at once p50 | router − all at once (p50) | router CPU per request "
                 "| all-at-once client CPU per request |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        none = {"median": None, "min": None, "max": None, "n": 0}
        for n, b in f["by_nodes"].items():
            L.append(f"| {n} | {fmt_s(b['router_p50_us'], 0)} | {fmt_s(b['router_p99_us'], 0)} | "
                     f"{fmt_s(b['node_max_p50_us'], 0)} | {fmt_s(b['node_max_p99_us'], 0)} | "
                     f"{fmt_s(b['over_slowest_p50_us'], 0)} | {fmt_s(b['over_slowest_p99_us'], 0)} | "
                     f"{fmt_s(b.get('direct_p50_us', none), 0)} | {fmt_s(b.get('over_direct_p50_us', none), 0)} | "
                     f"{fmt_s(b['router_cpu_us_per_request'], 0)} | {fmt_s(b.get('direct_cpu_us_per_request', none), 0)} |")
        L.append(f"\nWith the default `routing.list_cache_ms` (250 ms: a finished fan-out is reused while nothing "
                 f"changed), the same sequential client over {f['cached_nodes']} nodes sees p50 "
                 f"{fmt_s(f['cached_p50_us'], 0)} µs, p99 {fmt_s(f['cached_p99_us'], 0)} µs; the table above sets it "
                 "to 0, so every request is a real fan-out.")
        for name, x in f.get("extras", {}).items():
            L.append(f"\nCandidate `{name}` over {f['cached_nodes']} nodes in the same rounds: p50 "
                     f"{fmt_s(x['p50_us'], 0)} µs, CPU {fmt_s(x['cpu_us_per_request'], 0)} µs per request; "
                     f"router CPU ÷ candidate CPU {fmt_s(x['router_over_candidate_cpu'], 3)}, router p50 − "
                     f"candidate p50 {fmt_s(x['router_minus_candidate_p50_us'], 0)} µs (per round).")
        L.append("")
    s = R.get("scaling")
    if s:
        L.append(f"## Scaling\n\nFake nodes with a {s['service_ms']} ms service time and at most "
                 f"{s['max_concurrency']} requests at once (others queue), i.e. at most "
                 f"{s['ideal_node_rps']:.0f} req/s each; closed loop with 2 connections per node slot, each "
                 f"connection pinned to one bot (`bot/use/<id>/(/volume)`). One node reached directly: "
                 f"{fmt_s(s['direct_rps'], 0)} req/s. Efficiency = cluster req/s ÷ (N × one node direct), per round.\n")
        L.append("| nodes | req/s through the router | efficiency | vs N × router(1) | p99 ms | router CPU % |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        for n, b in s["by_nodes"].items():
            L.append(f"| {n} | {fmt_s(b['rps'], 0)} | {fmt_s(b['efficiency'], 3)} | "
                     f"{fmt_s(b['efficiency_vs_router1'], 3)} | {fmt_s(b['p99_us'], 1, 0.001)} | "
                     f"{fmt_s(b['router_cpu'], 0)} |")
        L.append("")
    pl = R.get("placement")
    if pl:
        L.append(f"## Placement\n\n{pl['creates']:,} `bot/connect/to` creates through the router, {pl['concurrency']} "
                 f"at once; {pl['ok']:,} succeeded ({pl['creates_per_s']:.0f} creates/s, p50 "
                 f"{pl['lat_us']['p50'] / 1000:.1f} ms, p99 {pl['lat_us']['p99'] / 1000:.1f} ms). Fair share = "
                 "created × capacity ÷ total capacity; counts are what each node itself lists.\n")
        L.append("| node | capacity | bots | fair share | deviation | fill |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        for i, (c, n, fa, d, fi) in enumerate(zip(pl["capacities"], pl["counts"], pl["fair"], pl["deviation_bots"],
                                                  pl["fill"])):
            L.append(f"| n{i} | {c} | {n} | {fa:.1f} | {d:+.1f} | {100 * fi:.2f} % |")
        L.append("")
    sc = R.get("scale")
    if sc:
        L.append(f"## Scale\n\n{sc['nodes']} nodes × {sc['bots_per_node']} bots: the router knew all "
                 f"{sc['bots_known']:,} bots {sc['seconds_to_know_all']:.1f} s after start. RSS "
                 f"{sc['rss_kib']['VmRSS'] / 1024:.1f} MiB (peak {sc['rss_kib']['VmHWM'] / 1024:.1f} MiB, "
                 f"{sc['rss_start_kib']['VmRSS'] / 1024:.1f} MiB at start, "
                 f"{sc['rss_after_load_kib']['VmRSS'] / 1024:.1f} MiB after the latency runs); idle CPU while "
                 f"polling every node every 2 s: {sc['idle_cpu_percent']:.1f} %.\n")
        L.append(f"`bot/use/<random id>/(/volume)` at a fixed {sc['rate']:,} req/s, open loop (µs):\n")
        L.append("| target | p50 | p90 | p99 | p99.9 |")
        L.append("| --- | --- | --- | --- | --- |")
        for c, q in sc["latency"].items():
            L.append(f"| {c} | {fmt_s(q['p50'], 0)} | {fmt_s(q['p90'], 0)} | {fmt_s(q['p99'], 0)} | {fmt_s(q['p999'], 0)} |")
        L.append(f"| router − direct | {fmt_s(sc['added_us']['p50'], 0)} | {fmt_s(sc['added_us']['p90'], 0)} | "
                 f"{fmt_s(sc['added_us']['p99'], 0)} | |")
        L.append("")
    fo = R.get("failover")
    if fo:
        L.append("## Failover\n")
        if fo["implemented"]:
            L.append(f"Node with {fo['bots']} bots killed (SIGKILL): marked down after {fo['decision_after_kill_s']:.2f} s "
                     f"(poll interval {fo['poll_interval_ms']} ms, 2 failed polls); all bots running on the spare nodes "
                     f"{fo['all_running_elsewhere_after_decision_s']:.2f} s after that; "
                     f"{fo['identities_kept']}/{fo['identities_before']} kept their TeamSpeak identity.\n")
        else:
            L.append(fo.get("note", "") + "\n")
    rs = R.get("restart")
    if rs:
        L.append(f"## Node restart\n\nA fake node process with {rs['bots']} bots ({rs['bots'] - rs['templates_run_true']} "
                 f"temporary, created through the router with `bot/connect/to`; {rs['templates_run_true']} `run = true` "
                 f"templates in its `--data-dir`) is killed (SIGKILL) and started again {rs['down_s']:.0f} s later on the "
                 f"same address and data dir; the router runs as shipped (poll interval {rs['poll_interval_ms']} ms, "
                 "failover after 30 s). A bot is back when `settings/get/connect.identity.key` through the router "
                 "answers its original key. One row per round (a fresh node, data dir and router each).\n")
        L.append("| round | all back after listening (s) | after SIGKILL (s) | first back (s) | router logged the restart (s) "
                 "| back / bots | other identity | node lists | identities twice |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for i, x in enumerate(rs["rounds"]):
            L.append(f"| {i} | {fmt(x['all_back_after_listening_s'])} | {fmt(x['all_back_after_kill_s'])} | "
                     f"{fmt(x['first_back_after_listening_s'])} | {fmt(x['router_logged_restart_after_listening_s'])} | "
                     f"{x['back_with_identity']} / {x['bots']} | {x['back_with_other_identity']} | {x['node_bots_after']} | "
                     f"{len(x['identities_twice'])} |")
        L.append(f"\nMedian (min–max): all back {fmt_s(rs['all_back_after_listening_s'])} s after the node listened "
                 f"again, {fmt_s(rs['all_back_after_kill_s'])} s after the SIGKILL.\n")
    so = R.get("store")
    if so:
        L.append(f"## Stores: MongoDB and the embedded store\n\n{so['creates']} creates (`bot/connect/to`, "
                 f"{so['concurrency']} connections) through one router on four fake nodes, per store, in "
                 f"{so['rounds']} interleaved rounds; the MongoDB side is {so['server']}. Each create waits for its "
                 "bot's record (the claim of its slot in MongoDB) before it is answered.\n")
        L.append("| store | creates/s | p50 (ms) | p99 (ms) |")
        L.append("| --- | --- | --- | --- |")
        for k in ("embedded", "mongodb"):
            L.append(f"| {k} | {fmt_s(so['creates_per_s'][k], 0)} | {fmt_s(so['p50_ms'][k])} | {fmt_s(so['p99_ms'][k])} |")
        L.append(f"\nMongoDB / embedded creates per second: {fmt_s(so['mongodb_vs_embedded'], 4)}; added p50 latency "
                 f"{fmt_s(so['added_p50_ms'])} ms.\n")
        d = so["sync_delay_s"]
        L.append(f"Sync delay (router A creates a bot, router B on the same database with polling off routes it; "
                 f"`sync_interval_ms: {so['sync_interval_ms']}`, {so['sync_samples']} samples): median "
                 f"{d['median'] * 1000:.0f} ms, p90 {d['p90'] * 1000:.0f} ms, max {d['max'] * 1000:.0f} ms.\n")
    m = R.get("micro")
    if m:
        L.append("## Micro-benchmarks (criterion, median)\n")
        L.append("| benchmark | median | 95 % CI |")
        L.append("| --- | --- | --- |")
        for k in sorted(m):
            v = m[k]
            L.append(f"| {k} | {v['median_ns'] / 1000:.3f} µs | {v['low_ns'] / 1000:.3f}–{v['high_ns'] / 1000:.3f} µs |")
        L.append("")
    if R.get("errors"):
        L.append("## Sections that failed\n")
        for k, v in R["errors"].items():
            L.append(f"- {k}: {v}")
        L.append("")
    return "\n".join(L)


def flatten(prefix, obj, rows):
    if isinstance(obj, dict):
        for k, v in obj.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, rows)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            flatten(f"{prefix}[{i}]", v, rows)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        rows.append((prefix, obj))


def sh(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip() or \
            subprocess.run(argv, capture_output=True, text=True, timeout=10).stderr.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_meta(mode):
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    commit = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if not re.fullmatch(r"[0-9a-f]{4,40}", commit or ""):
        commit = "none (uncommitted tree)"
    elif sh(["git", "-C", str(ROOT), "status", "--porcelain"]):
        commit += " (with local changes)"
    return {"mode": mode, "started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu,
            "cores": os.cpu_count(), "mem_gib": mem, "kernel": platform.platform(),
            "rustc": sh(["rustc", "--version"]), "nginx": sh(["nginx", "-v"]).replace("nginx version: ", ""),
            "wrk": " ".join(sh(["wrk", "-v"]).split()[:2]) or "wrk",
            "load_before": " ".join(open("/proc/loadavg").read().split()[:3]), "commit": commit}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short rounds (a few minutes in all)")
    ap.add_argument("--only", default=",".join(ALL_SECTIONS),
                    help="comma-separated sections (also: " + ", ".join(OPTIONAL_SECTIONS) + ")")
    ap.add_argument("--out", default=None, help="result directory (default benches/results/<timestamp>)")
    ap.add_argument("--extra-router", action="append", default=[], metavar="NAME=BINARY",
                    help="also measure another ts3ab-lb build in the proxy section (tuning A/B), e.g. jemalloc=/tmp/ts3ab-lb")
    ap.add_argument("--proxy-rounds", type=int, default=None, help="override the proxy section's round count")
    ap.add_argument("--lat-rounds", type=int, default=None, help="override the proxy section's fixed-rate latency round count")
    ap.add_argument("--knob-rows", default=None, help="knobs: only these comma-separated rows (e.g. 'bare all,router mi all')")
    ap.add_argument("--variants", action="store_true", help="measure the proxy variants (work-stealing runtime) in --quick too")
    args = ap.parse_args()
    quick = args.quick
    cfg = {
        "proxy_rounds": 3 if quick else 6, "proxy_secs": 3 if quick else 8, "proxy_variants": not quick,
        "lat_rounds": 1 if quick else 5, "lat_secs": 4 if quick else 8,
        "lat_low_rate": 0 if quick else 2000, "lat_low_rounds": 2,
        "fanout_sizes": [1, 4, 16, 64], "fanout_service_ms": 5, "fanout_rounds": 2 if quick else 3, "fanout_secs": 2 if quick else 5,
        "fanout_node_sample": 4 if quick else 8, "fanout_node_secs": 0.4 if quick else 0.8,
        "scaling_sizes": [1, 2, 4, 8, 16], "scaling_service_ms": 20, "scaling_concurrency": 4,
        "scaling_rounds": 1 if quick else 3, "scaling_secs": 3 if quick else 8,
        "placement_caps": [1000, 1500, 2000, 2500, 3500, 4500], "placement_creates": 10000,
        "scale_nodes": 100, "scale_bots": 300, "scale_rate": 2000, "scale_rounds": 1 if quick else 3,
        "scale_secs": 4 if quick else 10, "scale_settle": 3 if quick else 5, "scale_idle_secs": 5 if quick else 10,
        "failover_interval_ms": 2000, "failover_wait": 60, "failover_identity_wait": 6, "failover_after_decision": 15 if quick else 30,
        "restart_bots": 300, "restart_templates": 20, "restart_interval_ms": 2000, "restart_down_s": 1.0,
        "restart_identity_wait": 6, "restart_wait": 60, "restart_rounds": 1 if quick else 3,
        "store_rounds": 2 if quick else 3, "store_creates": 300 if quick else 1000, "store_sync_ms": 1000,
        "store_sync_samples": 20 if quick else 40,
        "micro_quick": quick,
        "knobs_rounds": 3 if quick else 6, "knobs_secs": 3 if quick else 5,
        "twocore_rounds": 3 if quick else 6, "twocore_secs": 3 if quick else 5, "twocore_wrk_threads": 2,
        "twocore_conns": 64, "twocore_mix_nodes": 4, "twocore_mix_bots": 25, "twocore_mix_rate": 2000,
        "twocore_kind_rate": 1000, "twocore_mix_nodes_big": 16,
        "extra_routers": [tuple(x.split("=", 1)) for x in args.extra_router],
    }
    if args.proxy_rounds:
        cfg["proxy_rounds"] = args.proxy_rounds
    if args.lat_rounds:
        cfg["lat_rounds"] = args.lat_rounds
    if args.variants:
        cfg["proxy_variants"] = True
    if args.knob_rows:
        cfg["knob_rows"] = [x.strip() for x in args.knob_rows.split(",") if x.strip()]
    sections = [s for s in args.only.split(",") if s]
    for s in sections:
        if s not in ALL_SECTIONS + OPTIONAL_SECTIONS:
            ap.error(f"unknown section {s}; sections: {', '.join(ALL_SECTIONS + OPTIONAL_SECTIONS)}")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else ROOT / "benches" / "results" / stamp
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    for b in [REL / "ts3ab-lb", REL / "ts3ab-fake-node", EX / "bare_pingora", EX / "bare_pingora_mimalloc", EX / "loadgen",
              EX / "fake_cluster"]:
        if not b.exists():
            sys.exit(f"missing {b}: build first (benches/run.sh does)")
    for tool in ["nginx", "wrk", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"missing {tool}: benches/run.sh installs it")
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs at least 2 CPUs (proxy on CPU 0, load on CPU 1)")
    global PROCS
    PROCS = Procs(os.environ.get("BENCH_PIDFILE", str(work / "pids")))

    def on_signal(signum, _frame):
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    meta = machine_meta("quick" if quick else "full")
    meta["config"] = cfg
    meta["sections"] = sections
    R = {"meta": meta}
    log(f"results in {out}; sections {sections}; load {meta['load_before']}")
    fns = {"proxy": section_proxy, "twocore": section_twocore, "knobs": section_knobs, "fanout": section_fanout, "scaling": section_scaling,
           "placement": section_placement, "scale": section_scale, "failover": section_failover,
           "restart": section_restart, "store": section_store, "micro": section_micro}
    try:
        for s in sections:
            t0 = time.time()
            log(f"== {s}")
            try:
                fns[s](cfg, work, R)
            except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
                log(f"section {s} failed: {e}")
                R.setdefault("errors", {})[s] = str(e)
            finally:
                PROCS.stop_all()
            R.setdefault("seconds", {})[s] = round(time.time() - t0, 1)
    finally:
        PROCS.stop_all()
        meta["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
        meta["quiet_waits_s"] = {"count": len(QUIET_WAITS), "total": round(sum(QUIET_WAITS), 1),
                                 "over_1s": len([w for w in QUIET_WAITS if w > 1]),
                                 "timed_out": len([w for w in QUIET_WAITS if w >= 29.5])}
        (out / "results.json").write_text(json.dumps(R, indent=1, default=str))
        rows = []
        flatten("", {k: v for k, v in R.items() if k != "meta"}, rows)
        with open(out / "results.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["metric", "value"])
            w.writerows(rows)
        (out / "results.md").write_text(render_md(R, meta))
        log(f"wrote {out / 'results.md'}")
    if R.get("errors"):
        sys.exit(1)


if __name__ == "__main__":
    main()
