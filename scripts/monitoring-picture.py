#!/usr/bin/env python3
"""Renders docs/monitoring.png: the Grafana dashboard's panels, drawn from real scraped data.

It starts `ts3ab-lb demo` (the router on the embedded store in front of three in-process fake
TS3AudioBot nodes), one ts3ab-lb-agent per demo node (real /proc, the demo process as the
"TS3AudioBot" process, the node's API), and a Prometheus with the shipped conf/prometheus.yml
and conf/prometheus-rules.yml pointed at them. It then drives a few minutes of traffic through
the router (creates, pinned requests, lists, a few errors, an evacuation, disconnects), queries
Prometheus's HTTP API with the dashboard's own PromQL (conf/grafana/ts3ab-lb.json, Grafana's
variables substituted) and plots the chosen panels in a grid with matplotlib.

Grafana itself has no Debian package and no registry this machine can reach, so the panels are
plotted from the same queries instead. Run it through scripts/monitoring-picture.sh, which
builds the binaries and makes a venv with matplotlib and PyYAML under target/tmp.

Every process it starts is stopped (SIGTERM, then SIGKILL, by PID) when it ends, on any error,
on SIGINT/SIGTERM, and by the kernel (PR_SET_PDEATHSIG) if this script is killed; the whole
run is bounded (--duration plus a fixed allowance).
"""

import argparse
import base64
import ctypes
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_KEY = ("admin", "demo-secret")  # src/server/demo.rs (DEMO_KEY, DEMO_SECRET)
DEMO_NODES = 3  # src/server/demo.rs starts node-1..node-3, tokens router:node-<i>-token

DEFAULT_PANELS = [
    "Bots per node",
    "Capacity used per node",
    "Requests by kind and class",
    "Latency p50 / p99",
    "Failovers and moves",
    "Bots by status (agent)",
    "Host CPU busy",
    "Host memory used",
    "TS3AudioBot process CPU",
]


class Failure(Exception):
    """An error with a message for the user (no traceback)."""


def log(msg):
    print(f"monitoring-picture: {msg}", file=sys.stderr, flush=True)


# === processes ===

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # The child gets SIGKILL when this script dies, even by SIGKILL.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Procs:
    """The processes this script started; stopped by PID in reverse order."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, log_path, env=None):
        out = open(log_path, "wb")
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent,
        )
        out.close()
        self.procs.append((name, p, log_path))
        return p

    def check_alive(self):
        for name, p, log_path in self.procs:
            if p.poll() is not None:
                raise Failure(f"{name} exited with {p.returncode}; its log ({log_path}):\n{tail(log_path)}")

    def stop_all(self):
        for name, p, _ in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 5
        for name, p, _ in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()


def tail(path, n=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, deadline_s, f, procs, interval=0.2):
    deadline = time.monotonic() + deadline_s
    while True:
        v = f()
        if v:
            return v
        procs.check_alive()
        if time.monotonic() >= deadline:
            raise Failure(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(interval)


def wait_log(path, pattern, what, deadline_s, procs):
    rx = re.compile(pattern)

    def found():
        try:
            return rx.findall(Path(path).read_text(errors="replace"))
        except OSError:
            return None

    return wait_for(what, deadline_s, found, procs)


# === HTTP ===


def http(url, auth=None, method="GET", body=None, timeout=10):
    """(status, body text); a connection failure is status 0."""
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


class PromAPI:
    def __init__(self, addr):
        self.base = f"http://{addr}"

    def get(self, path, **params):
        q = urllib.parse.urlencode(params)
        status, text = http(f"{self.base}{path}?{q}", timeout=30)
        try:
            v = json.loads(text)
        except ValueError:
            raise Failure(f"Prometheus answered {path} with {status}: {text[:300]}")
        if v.get("status") != "success":
            raise Failure(f"Prometheus: {path} {params}: {v.get('errorType')}: {v.get('error')}")
        return v["data"]

    def instant(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.get("/api/v1/query", **params)["result"]

    def range(self, expr, start, end, step):
        return self.get("/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step)["result"]

    def targets(self):
        data = self.get("/api/v1/targets", state="active")
        return [
            f"{t['labels'].get('job')} {t['scrapeUrl']} {t['health']} {t.get('lastError', '')}"
            for t in data["activeTargets"]
        ]


# === the dashboard ===


def substitute(expr, rate_interval):
    e = expr
    for var, value in [
        ("${__rate_interval}", rate_interval),
        ("$__rate_interval", rate_interval),
        ("${__interval}", rate_interval),
        ("$__interval", rate_interval),
        ("${node}", ".*"),
        ("$node", ".*"),
    ]:
        e = e.replace(var, value)
    if "$" in e:
        raise Failure(f"unknown Grafana variable in {expr!r}")
    return e


def legend(fmt, metric):
    if not fmt or fmt == "__auto":
        labels = {k: v for k, v in metric.items() if k not in ("__name__", "job", "instance")}
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or metric.get("__name__", "value")
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt)


def dashboard_panels(dash):
    out = []
    for p in dash["panels"]:
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


# === the demo ===


def start_everything(args, procs, work):
    bin_dir = Path(args.bin_dir)
    router_bin, agent_bin = bin_dir / "ts3ab-lb", bin_dir / "ts3ab-lb-agent"
    for b in (router_bin, agent_bin):
        if not b.is_file():
            raise Failure(f"{b} is missing: build it first (scripts/monitoring-picture.sh does)")
    prometheus = args.prometheus
    if not Path(prometheus).is_file():
        raise Failure(f"{prometheus} is missing: install Debian's prometheus package (scripts/prereqs.sh)")

    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    demo_log = work / "demo.log"
    demo = procs.start(
        "ts3ab-lb demo",
        [str(router_bin), "demo", "--listen", listen, "--admin", admin, "--data", str(work / "demo-data")],
        demo_log,
        env={"RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    nodes = wait_log(demo_log, r"node-(\d+) at (http://\S+)", "the demo's node addresses", 60, procs)
    nodes = sorted({(int(i), url) for i, url in nodes})
    if len(nodes) != DEMO_NODES:
        raise Failure(f"the demo printed {len(nodes)} nodes, expected {DEMO_NODES}:\n{tail(demo_log)}")
    wait_for(
        "the router to answer bot/list",
        60,
        lambda: http(f"http://{listen}/api/bot/list", DEMO_KEY)[0] == 200,
        procs,
    )
    log(f"demo router on {listen}, admin listener on {admin}, nodes {[u for _, u in nodes]}")

    router_metrics = http(f"http://{admin}/metrics", DEMO_KEY)[0]
    if router_metrics != 200 and not args.agent_only:
        raise Failure(
            f"the router's admin listener answers GET /metrics with {router_metrics}: this build has no "
            "router metrics (README.md, Monitoring). Build a router that has them, or pass --agent-only "
            "to draw the agent's panels alone (router panels then show 'no data')."
        )

    pid_file = work / "ts3ab.pid"
    pid_file.write_text(f"{demo.pid}\n")
    agents = []
    for i, url in nodes:
        agent_log = work / f"agent-{i}.log"
        procs.start(
            f"agent node-{i}",
            [
                str(agent_bin),
                "--listen",
                "127.0.0.1:0",
                "--api",
                url,
                "--api-auth-env",
                "DEMO_API_AUTH",
                "--token-env",
                "DEMO_AGENT_TOKEN",
                "--pid-file",
                str(pid_file),
            ],
            agent_log,
            env={"DEMO_API_AUTH": f"router:node-{i}-token", "DEMO_AGENT_TOKEN": "demo-agent-token", "RUST_LOG": "warn,ts3ab_lb_agent=info"},
        )
        addr = wait_log(agent_log, r"listening on http://(\S+)", f"agent node-{i}'s address", 30, procs)[0]
        agents.append((f"node-{i}", addr))

    # The shipped config, pointed at the demo.
    try:
        import yaml
    except ImportError:
        raise Failure("PyYAML is missing: run this through scripts/monitoring-picture.sh")
    cfg = yaml.safe_load((ROOT / "conf/prometheus.yml").read_text())
    cfg["global"]["scrape_interval"] = f"{args.scrape_interval}s"
    cfg["global"]["evaluation_interval"] = f"{args.scrape_interval}s"
    cfg["rule_files"] = [str(ROOT / "conf/prometheus-rules.yml")]
    (work / "admin.secret").write_text(DEMO_KEY[1])
    (work / "agent.token").write_text("demo-agent-token\n")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    jobs["ts3ab-lb"]["basic_auth"] = {"username": DEMO_KEY[0], "password_file": str(work / "admin.secret")}
    jobs["ts3ab-lb"]["static_configs"] = [{"targets": [admin]}]
    jobs["ts3ab-lb-agent"]["authorization"]["credentials_file"] = str(work / "agent.token")
    jobs["ts3ab-lb-agent"]["static_configs"] = [{"targets": [a], "labels": {"node": n}} for n, a in agents]
    prom_cfg = work / "prometheus.yml"
    prom_cfg.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    prom_addr = f"127.0.0.1:{free_port()}"
    procs.start(
        "prometheus",
        [
            prometheus,
            f"--config.file={prom_cfg}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address={prom_addr}",
            "--storage.tsdb.retention.time=1d",
        ],
        work / "prometheus.log",
    )
    wait_for("Prometheus to be ready", 60, lambda: http(f"http://{prom_addr}/-/ready")[0] == 200, procs)
    prom = PromAPI(prom_addr)
    want_up = len(agents) + (0 if router_metrics != 200 else 1)
    try:
        wait_for(
            f"{want_up} scrape targets up",
            30,
            lambda: sum(float(r["value"][1]) for r in prom.instant("up")) >= want_up,
            procs,
            interval=0.5,
        )
    except Failure as e:
        raise Failure(f"{e}; targets:\n  " + "\n  ".join(prom.targets()))
    log(f"Prometheus on {prom_addr} scrapes {want_up} targets")
    return listen, admin, prom


class Load:
    """Traffic through the router: creates, pinned requests, lists, errors, disconnects."""

    def __init__(self, listen, admin, duration, procs):
        self.base = f"http://{listen}/api"
        self.admin = f"http://{admin}/admin/api"
        self.duration = duration
        self.procs = procs
        self.bots = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.errors = []
        self.sent = 0

    def get(self, path):
        status, text = http(self.base + path, DEMO_KEY)
        with self.lock:
            self.sent += 1
        if status == 0:
            raise Failure(f"the router did not answer {path}")
        return status, text

    def create(self):
        status, text = self.get("/bot/connect/to/ts.example.com")
        if status == 200:
            try:
                bot_id = json.loads(text)["Id"]
            except (ValueError, KeyError, TypeError):
                return
            with self.lock:
                self.bots.append(bot_id)

    def disconnect(self):
        with self.lock:
            if not self.bots:
                return
            bot_id = self.bots.pop(random.randrange(len(self.bots)))
        self.get(f"/bot/use/{bot_id}/(/bot/disconnect)")

    def worker(self, seed):
        rnd = random.Random(seed)
        while not self.stop.is_set():
            with self.lock:
                bot = rnd.choice(self.bots) if self.bots else None
            r = rnd.random()
            try:
                if r < 0.45 and bot is not None:
                    self.get(f"/bot/use/{bot}/(/bot/info)")
                elif r < 0.65 and bot is not None:
                    self.get(f"/bot/use/{bot}/(/json/merge/(/bot/info)/(/song))")
                elif r < 0.85:
                    self.get("/bot/list")
                elif r < 0.95:
                    self.get("/system/info")
                else:
                    self.get("/bot/use/999999/(/bot/info)")  # no such bot: a 4xx
            except Failure as e:
                self.errors.append(str(e))
                return
            time.sleep(rnd.uniform(0.02, 0.12))

    def run(self):
        start = time.monotonic()
        workers = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(3)]
        for w in workers:
            w.start()
        # Smaller capacities, so that "capacity used" moves visibly.
        for i in range(1, DEMO_NODES + 1):
            http(f"{self.admin}/nodes/node-{i}", DEMO_KEY, method="PATCH", body={"capacity": 40})
        evacuated = False
        try:
            while (t := (time.monotonic() - start) / self.duration) < 1:
                self.procs.check_alive()
                if self.errors:
                    raise Failure(self.errors[0])
                if t < 0.45:
                    self.create()  # ramp up
                elif t < 0.75:
                    if not evacuated and t >= 0.55:
                        # Moves: empty node-3 onto the others (its bots move, same ids).
                        status, text = http(f"{self.admin}/nodes/node-3/evacuate", DEMO_KEY, method="POST", body={})
                        log(f"evacuate node-3: {status} {text[:120]}")
                        evacuated = True
                    if random.random() < 0.3:
                        self.create()
                else:
                    if random.random() < 0.6:
                        self.disconnect()
                time.sleep(1.0)
        finally:
            self.stop.set()
            for w in workers:
                w.join(timeout=15)
        log(f"load done: {self.sent} requests, {len(self.bots)} bots left from the run")


# === plotting ===


def human(v, unit):
    if unit == "percentunit":
        return f"{v * 100:.1f} %"
    if unit == "s":
        return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"
    if unit in ("bytes", "bps"):
        suffix = "B" if unit == "bytes" else "b/s"
        for p in ["", "K", "M", "G", "T"]:
            if abs(v) < 1024 or p == "T":
                return f"{v:.1f} {p}{suffix}"
            v /= 1024
    if unit == "reqps":
        return f"{v:.1f} req/s"
    return f"{v:.3g}"


def plot(args, prom, dash, start, end, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
    from datetime import datetime, timezone

    panels = {p["title"]: p for p in dashboard_panels(dash)}
    missing = [t for t in args.panels if t not in panels]
    if missing:
        raise Failure(f"no panels titled {missing} in the dashboard; it has {sorted(panels)}")

    plt.rcParams.update(
        {
            "figure.facecolor": "#181b1f",
            "axes.facecolor": "#111217",
            "axes.edgecolor": "#34373d",
            "axes.labelcolor": "#ccccdc",
            "text.color": "#ccccdc",
            "xtick.color": "#9fa1a8",
            "ytick.color": "#9fa1a8",
            "grid.color": "#2c2f35",
            "font.size": 9,
            "legend.fontsize": 7,
            "legend.frameon": False,
        }
    )
    cols = 3
    rows = (len(args.panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.4 * rows + 0.9), squeeze=False)
    step = f"{args.step}s"
    empty = []
    for ax, title in zip(axes.flat, args.panels):
        p = panels[title]
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        drew = False
        lines = []
        for t in p["targets"]:
            expr = substitute(t["expr"], args.rate_interval)
            for series in prom.range(expr, start, end, step):
                xs = [datetime.fromtimestamp(float(ts), timezone.utc) for ts, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                lines.append((legend(t.get("legendFormat"), series["metric"]), xs, ys))
        # Like Grafana's "hide series with only zeros" legend option, for crowded panels (every
        # kind and status class exists from the start, most stay at zero).
        if len(lines) > 8 and any(any(ys) for _, _, ys in lines):
            lines = [ln for ln in lines if any(ln[2])]
        for name, xs, ys in lines:
            style = "--" if name.endswith("capacity") else "-"
            ax.plot(xs, ys, style, linewidth=1.3, label=name)
            drew = True
        ax.set_title(title, loc="left", fontsize=10, color="#e0e0e8")
        ax.grid(True, linewidth=0.6)
        ax.set_xlim(datetime.fromtimestamp(start, timezone.utc), datetime.fromtimestamp(end, timezone.utc))
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=7))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=timezone.utc))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, u=unit: human(v, u)))
        d = p.get("fieldConfig", {}).get("defaults", {})
        if "min" in d:
            ax.set_ylim(bottom=d["min"])
        if "max" in d:
            ax.set_ylim(top=d["max"])
        if drew:
            ax.legend(loc="upper left", ncol=2)
        else:
            empty.append(title)
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="#6e7079")
    for ax in list(axes.flat)[len(args.panels):]:
        ax.set_visible(False)

    # The cluster overview row's stat panels, at the end of the run.
    stats = []
    for p in dashboard_panels(dash):
        if p.get("type") != "stat":
            continue
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        vals = []
        for t in p["targets"]:
            r = prom.instant(substitute(t["expr"], args.rate_interval), at=end)
            vals.append(human(float(r[0]["value"][1]), unit) if r else "–")
        stats.append(f"{p['title']}: {' / '.join(vals)}")
    when = datetime.fromtimestamp(end, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fig.suptitle(
        f"ts3ab-lb dashboard (conf/grafana/ts3ab-lb.json), ts3ab-lb demo + 3 agents, scraped by Prometheus, {when}\n"
        + "    ".join(stats),
        x=0.01,
        ha="left",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    log(f"wrote {out} ({out.stat().st_size} bytes)")
    if empty:
        log(f"panels without data: {empty}")
    return empty


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs/monitoring.png"), help="the PNG to write")
    ap.add_argument("--duration", type=int, default=150, help="seconds of traffic (default 150)")
    ap.add_argument("--bin-dir", default=str(ROOT / "target/debug"), help="where ts3ab-lb and ts3ab-lb-agent are")
    ap.add_argument("--prometheus", default="/usr/bin/prometheus")
    ap.add_argument("--scrape-interval", type=int, default=2, help="seconds (default 2)")
    ap.add_argument("--step", type=int, default=4, help="query_range step, seconds (default 4)")
    ap.add_argument("--rate-interval", default="20s", help="what $__rate_interval becomes (default 20s)")
    ap.add_argument("--dpi", type=int, default=110)
    ap.add_argument("--panels", nargs="+", default=DEFAULT_PANELS, help="dashboard panel titles to draw")
    ap.add_argument(
        "--agent-only",
        action="store_true",
        help="go on when the router has no /metrics (router panels show 'no data'; for testing the script)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, TSDB)")
    args = ap.parse_args()
    if args.duration < 20:
        raise Failure("--duration must be at least 20 seconds")

    dash = json.loads((ROOT / "conf/grafana/ts3ab-lb.json").read_text())
    procs = Procs()

    def on_signal(signum, _frame):
        raise Failure(f"stopped by signal {signum}")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, lambda *_: on_signal("SIGALRM (time limit)", None))
    signal.alarm(args.duration + 300)  # the whole run, whatever hangs
    work = Path(tempfile.mkdtemp(prefix="ts3ab-monitoring-", dir=os.environ.get("TMPDIR")))
    ok = False
    try:
        listen, admin, prom = start_everything(args, procs, work)
        start = time.time()
        Load(listen, admin, args.duration, procs).run()
        # One more scrape and rule evaluation after the last request.
        time.sleep(2 * args.scrape_interval + 1)
        end = time.time()
        empty = plot(args, prom, dash, start - 10, end, Path(args.out))
        if empty and not args.agent_only:
            log("some panels have no data; check the router's metrics")
        ok = True
    finally:
        signal.alarm(0)
        procs.stop_all()
        if args.keep or not ok:
            log(f"logs and data kept in {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        log(f"error: {e}")
        sys.exit(1)
