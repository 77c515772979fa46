"""Load test of ``ferkit serve`` on loopback: requests/s and p50/p99 latency at concurrency 1, 8 and 32, with
and without micro-batching; errors counted; server RSS before and after. Bounded: ``--requests`` per level
(default 120; the last level is run ``--repeat`` (2) more times to show whether memory stays flat) and
``--max-seconds`` per level (default 60); the server is a subprocess on 127.0.0.1 that is stopped at the end.

With ``--slow-clients N``, N slowloris clients hold kept-alive connections the whole time (each sends one whole
``GET /healthz``, then the next request's headers one line every ``--slow-interval`` s, and reconnects when
dropped), and the table's ``503`` column is the well-behaved clients' 503 rate (goal: 0), ``conn`` their
refused/dropped connections.

    python bench/serve_load.py [--requests 120] [--levels 1,8,32] [--det-size 640] [--image PATH]
    python bench/serve_load.py --slow-clients 200 --modes batch --levels 8,32 --repeat 0
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start(port: int, batch_max: int, det_size: int, wait_ms: float):
    import httpx

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ferkit",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            "fer_minixception",
            "--detector",
            "retinaface",
            "--det-size",
            str(det_size),
            "--batch-max",
            str(batch_max),
            "--batch-wait-ms",
            str(wait_ms),
        ],
        env=dict(os.environ, FERKIT_API_KEY=""),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    t0 = time.time()
    while time.time() - t0 < 120:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
    proc.kill()
    raise SystemExit("server did not start in 120 s")


class SlowClients:
    """``n`` slowloris clients on kept-alive connections, in one thread: each sends one whole request, then the
    next request's headers one line every ``interval`` s; one the server drops is reopened at once."""

    def __init__(self, port: int, n: int, interval: float = 2.0):
        import threading

        self.port, self.n, self.interval = port, n, interval
        self.dropped = self.refused = 0
        self.open: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        t0 = time.time()
        while len(self.open) < self.n and time.time() - t0 < 30:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        for s in self.open:
            s.close()

    def _connect(self):
        import socket

        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b'{"status":"ok"}' not in got:
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError("closed")
                got += chunk
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
        except OSError:
            s.close()
            raise
        return s

    def _run(self):
        last = {}
        while not self._stop.is_set():
            while len(self.open) < self.n and not self._stop.is_set():
                try:
                    s = self._connect()
                except OSError:
                    self.refused += 1
                    break
                self.open.append(s)
                last[s] = time.time()
            for s in self.open[:]:
                if time.time() - last[s] < self.interval:
                    continue
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                    last[s] = time.time()
                except OSError:
                    self.dropped += 1
                    self.open.remove(s)
                    s.close()
            self._stop.wait(0.05)


def level(url: str, data: bytes, conc: int, n: int, max_s: float) -> dict:
    import httpx

    lat, errors, busy, conn = [], 0, 0, 0
    deadline = time.perf_counter() + max_s
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=conc)) as c:

        def one(_):
            if time.perf_counter() > deadline:
                return None
            t = time.perf_counter()
            try:
                r = c.post("/v1/predict", content=data, headers={"content-type": "image/jpeg"})
                code = r.status_code
                ok = code == 200 and bool(r.json()["faces"])
            except httpx.HTTPError:
                ok, code = False, "conn"
            return time.perf_counter() - t, ok, code

        def warm(_):
            with contextlib.suppress(httpx.HTTPError):
                c.post("/v1/predict", content=data, headers={"content-type": "image/jpeg"})

        with ThreadPoolExecutor(conc) as ex:  # warm-up at this concurrency (not timed)
            list(ex.map(warm, range(min(conc, 8) * 2)))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(conc) as ex:
            for res in ex.map(one, range(n)):
                if res is None:
                    continue
                lat.append(res[0])
                errors += not res[1]
                busy += res[2] == 503
                conn += res[2] == "conn"
        wall = time.perf_counter() - t0
    a = np.array(lat) * 1000
    return {
        "n": len(lat),
        "rps": len(lat) / wall,
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "errors": errors,
        "503": busy,
        "conn": conn,
    }


def main() -> int:
    from ferkit.serve.app import free_port

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--det-size", type=int, default=640)
    ap.add_argument("--batch-max", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=2, help="run the last level this many more times (memory check)")
    ap.add_argument("--modes", default="batch,nobatch", help="batch, nobatch or both (comma-separated)")
    ap.add_argument("--image", default=None, help="default: matplotlib's grace_hopper.jpg (512x600, one face)")
    ap.add_argument(
        "--slow-clients",
        type=int,
        default=0,
        help="slowloris clients holding kept-alive connections meanwhile (the server's cap is 256)",
    )
    ap.add_argument("--slow-interval", type=float, default=2.0, help="seconds between a slow client's header lines")
    a = ap.parse_args()
    if a.image:
        data = open(a.image, "rb").read()
    else:
        import matplotlib

        data = open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"), "rb").read()
    levels = [int(x) for x in a.levels.split(",")]
    print(
        f"# ferkit serve load: {a.requests} requests/level (<= {a.max_seconds:g} s), det_size {a.det_size}, "
        f"{os.cpu_count()} CPUs, loopback"
    )
    if a.slow_clients:
        print(f"# {a.slow_clients} slow clients on kept-alive connections, one header line every {a.slow_interval:g} s")
    print(
        f"{'mode':<22}{'conc':>5}{'n':>6}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}{'503':>5}{'conn':>5}"
        f"{'RSS MB':>8}"
    )
    failed = 0
    modes = {"batch": (f"micro-batch {a.batch_max}/{a.batch_wait_ms:g}ms", a.batch_max), "nobatch": ("no batching", 1)}
    for mode, bm in (modes[m] for m in a.modes.split(",")):
        port = free_port()
        proc = start(port, bm, a.det_size, a.batch_wait_ms)
        slow = SlowClients(port, a.slow_clients, a.slow_interval) if a.slow_clients else contextlib.nullcontext()
        try:
            rss0 = rss_mb(proc.pid)
            n = n503 = 0
            with slow:
                for conc in levels + levels[-1:] * a.repeat:  # the last level twice more: memory must stay flat
                    r = level(f"http://127.0.0.1:{port}", data, conc, a.requests, a.max_seconds)
                    failed += r["errors"]
                    n, n503 = n + r["n"], n503 + r["503"]
                    print(
                        f"{mode:<22}{conc:>5}{r['n']:>6}{r['rps']:>8.2f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
                        f"{r['errors']:>7}{r['503']:>5}{r['conn']:>5}{rss_mb(proc.pid):>8.0f}",
                        flush=True,
                    )
                if a.slow_clients:
                    print(
                        f"{mode:<22} well-behaved 503 rate {n503}/{n} = {n503 / max(n, 1):.1%} while "
                        f"{len(slow.open)} of {a.slow_clients} slow clients held connections (the server dropped "
                        f"{slow.dropped}, refused {slow.refused} of their connections)"
                    )
            rss1 = rss_mb(proc.pid)
            print(f"{mode:<22} server RSS {rss0:.0f} MB after start-up -> {rss1:.0f} MB after all levels")
        finally:
            proc.terminate()
            proc.wait(20)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
