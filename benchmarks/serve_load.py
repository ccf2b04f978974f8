"""Load on ``mirnet serve``: throughput, latency, refusals and memory with 1-16 clients, and
six huge uploads whose clients give up.

Starts ``mirnet serve`` on 127.0.0.1 (default model and settings unless given), then:

* for each client count (default 1, 4, 8, 16), that many threads post a 600x400 photo
  (samples/coffee_dark.png) in a loop for ``--seconds`` s. A 503 is counted and its client
  waits the ``Retry-After`` it was given, as a well-behaved client would;
* six clients at once post a 67 KB PNG of 4800x4800 zeros (23 megapixels, under the default
  24-megapixel limit), wait ``--huge-wait`` s and hang up. The server's peak RSS is
  recorded, and its CPU time in the seconds after the clients left shows whether the work
  stopped with them.

The server's resident memory is sampled from /proc every 0.1 s (Linux). Results go to
benchmarks/results/serve-load-cpu.json and are printed as a Markdown table.

    python benchmarks/serve_load.py
    python benchmarks/serve_load.py --clients 1 8 --seconds 10 -- --workers 1
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "samples" / "coffee_dark.png"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Memory:
    """Samples a process's resident memory (VmRSS) in a thread; ``peak()`` since ``reset()``."""

    def __init__(self, pid: int):
        self.pid, self._peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._peak = max(self._peak, self.rss())
            except OSError:
                return
            time.sleep(0.1)

    def reset(self) -> None:
        self._peak = self.rss()

    def peak(self) -> int:
        return self._peak

    def stop(self) -> None:
        self._stop.set()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def client_loop(port: int, body: bytes, content_type: str, until: float, results: list) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            connection.request("POST", "/enhance", body, {"Content-Type": content_type})
            response = connection.getresponse()
            response.read()
            status, retry = response.status, response.getheader("Retry-After")
            connection.close()
        except OSError as err:
            results.append(("error", time.monotonic() - started, str(err)))
            continue
        results.append((status, time.monotonic() - started, None))
        if status == 503:
            time.sleep(min(float(retry or 1), max(0.0, until - time.monotonic())))


def run_clients(port: int, clients: int, seconds: float) -> list:
    body, content_type = multipart(PHOTO.read_bytes(), PHOTO.name)
    results: list = []
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=client_loop, args=(port, body, content_type, until, results))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def huge_uploads(port: int, count: int, wait: float) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4800, 4800, 3), np.uint8)).save(buffer, format="PNG", optimize=True)
    body, content_type = multipart(buffer.getvalue(), "zeros.png")
    head = (
        f"POST /enhance HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(head + body)
        sockets.append(sock)
    time.sleep(wait)
    for sock in sockets:
        sock.close()  # the clients give up
    return len(body)


def summarise(clients: int, seconds: float, results: list, peak_rss: int) -> dict:
    ok = [latency for status, latency, _ in results if status == 200]
    busy = [latency for status, latency, _ in results if status == 503]
    other = [(status, error) for status, _, error in results if status not in (200, 503)]
    return {
        "clients": clients,
        "seconds": seconds,
        "ok": len(ok),
        "requests_per_s": len(ok) / seconds,
        "p50_s": statistics.median(ok) if ok else None,
        "p95_s": float(np.percentile(ok, 95)) if ok else None,
        "busy_503": len(busy),
        "busy_503_max_s": max(busy) if busy else None,
        "failed": len(other),
        "failures": other[:5],
        "peak_rss_gb": peak_rss / 1e9,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=30.0, help="per client count (default 30)")
    parser.add_argument("--huge", type=int, default=6, help="huge uploads at once (default 6; 0: skip)")
    parser.add_argument("--huge-wait", type=float, default=10.0, help="seconds before they hang up")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve-load-cpu.json"))
    parser.add_argument("server_args", nargs="*", help="extra mirnet serve options, after --")
    args = parser.parse_args()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "mirnet", "serve", "--port", str(port), *args.server_args]
    log = open(Path(args.out).with_suffix(".log"), "w")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/health")
                health = json.loads(connection.getresponse().read())
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start; see the .log next to --out") from None
                time.sleep(0.3)
        memory = Memory(server.pid)
        report = {
            "server": " ".join(command[1:]),
            "health": health,
            "idle_rss_gb": memory.rss() / 1e9,
            "runs": [],
        }
        for clients in args.clients:
            memory.reset()
            results = run_clients(port, clients, args.seconds)
            report["runs"].append(summarise(clients, args.seconds, results, memory.peak()))
            print(json.dumps(report["runs"][-1]), flush=True)
        if args.huge:
            memory.reset()
            cpu_before = cpu_seconds(server.pid)
            size = huge_uploads(port, args.huge, args.huge_wait)
            cpu_at_hangup = cpu_seconds(server.pid)
            time.sleep(2)  # cancellation is checked every 0.25 s and between tiles
            cpu_settle = cpu_seconds(server.pid)
            time.sleep(5)
            cpu_after = cpu_seconds(server.pid)
            report["huge"] = {
                "uploads": args.huge,
                "upload_bytes": size,
                "megapixels": 4800 * 4800 / 1e6,
                "clients_waited_s": args.huge_wait,
                "peak_rss_gb": memory.peak() / 1e9,
                "server_cpu_s_while_connected": cpu_at_hangup - cpu_before,
                "server_cpu_s_in_2s_after_hangup": cpu_settle - cpu_at_hangup,
                "server_cpu_s_in_next_5s": cpu_after - cpu_settle,
            }
            print(json.dumps(report["huge"]), flush=True)
        memory.stop()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("\n| clients | requests/s | p50 s | p95 s | 503s | other failures | peak RSS GB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for run in report["runs"]:
        p50 = f"{run['p50_s']:.2f}" if run["p50_s"] is not None else "-"
        p95 = f"{run['p95_s']:.2f}" if run["p95_s"] is not None else "-"
        print(
            f"| {run['clients']} | {run['requests_per_s']:.2f} | {p50} | {p95} | {run['busy_503']} | "
            f"{run['failed']} | {run['peak_rss_gb']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
