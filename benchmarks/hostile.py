"""Hostile clients against `sca serve`, on this machine's loopback only: what they cost the server and whether real
requests still get through. Every scenario starts its own server (so its peak memory is its own), is bounded in
requests, sockets and seconds, and stops the server at the end.

    python benchmarks/hostile.py                    # every scenario, the shipped model
    python benchmarks/hostile.py --only masks,slow  --out bench/

Scenarios:
    masks       N mask prompts (COCO RLE of a 25-megapixel image, ~50 bytes each): the server's peak memory
    flood       a JSON body of a million boxes (18 MB): the answer, its time, and /api/health meanwhile
    slow        260 connections that never finish their headers, for 12 s: /api/health meanwhile, and how many
                of the slow connections the server closed
    disconnect  a client that leaves a 64-box request on a 25-megapixel image after 1 s: how long a small request
                sent next waits
    load        1 and 8 clients captioning the sample's three shapes: p50, p95, throughput against one client
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from load import HOST, big_image, free_port, peak_memory_gb, run_clients, start_server

from sca.assets.build import sample_record
from sca.masks import encode_rle
from sca.tables import markdown_table

SCENARIOS = ("masks", "flood", "slow", "disconnect", "load")


class Server:
    def __init__(self, extra: list[str]):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process = start_server(self.port, extra)

    def rss_gb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e9
        return float("nan")

    def peak_gb(self) -> float:
        return peak_memory_gb(self.process.pid)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def health_latencies(url: str, stop: threading.Event, out: list) -> None:
    """/api/health every 0.25 s until `stop`: (seconds, status or None on a failure)."""
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                status = client.get(f"{url}/api/health").status_code
            except httpx.HTTPError:
                status = None
            out.append((time.perf_counter() - start, status))
            stop.wait(0.25)


def summary(latencies: list) -> str:
    ok = [t for t, status in latencies if status == 200]
    worst = f", worst {max(ok) * 1000:.0f} ms" if ok else ""
    return f"{len(ok)}/{len(latencies)} answered 200{worst}"


def masks(extra: list[str]) -> list[list]:
    rows = []
    for count in (16, 64):
        server = Server(extra)
        try:
            big = httpx.post(f"{server.url}/api/images", content=big_image(), timeout=120,
                             headers={"Content-Type": "image/png"}).json()
            side = big["width"]
            regions = []
            for i in range(count):
                mask = np.zeros((side, side), dtype=bool)
                top, left = (i * 997) % (side // 2), (i * 1499) % (side // 2)
                mask[top : top + side // 8, left : left + side // 8] = True
                regions.append({"mask": encode_rle(mask)})
            before = server.rss_gb()
            body = json.dumps({"image": big["image"], "regions": regions}).encode()
            start = time.perf_counter()
            answer = httpx.post(f"{server.url}/api/caption", content=body, timeout=900,
                                headers={"Content-Type": "application/json"})
            seconds = time.perf_counter() - start
            rows.append([f"{count} mask prompts, {side * side / 1e6:.0f} MP", f"{len(body) / 1e3:.0f} kB",
                         answer.status_code, f"{seconds:.1f} s",
                         f"{before:.2f} → peak {server.peak_gb():.2f} GB (+{server.peak_gb() - before:.2f})"])
        finally:
            server.close()
    return rows


def flood(extra: list[str]) -> list[list]:
    server = Server(extra)
    try:
        before = server.rss_gb()
        body = json.dumps({"image": "x", "regions": [{"box": [1, 2, 3, 4]}] * 1_000_000}).encode()
        stop, latencies = threading.Event(), []
        watcher = threading.Thread(target=health_latencies, args=(server.url, stop, latencies))
        watcher.start()
        start = time.perf_counter()
        try:
            answer = httpx.post(f"{server.url}/api/caption", content=body, timeout=120,
                                headers={"Content-Type": "application/json"})
            status = answer.status_code
        except httpx.HTTPError as error:  # the server may close the connection once it has refused the body
            status = type(error).__name__
        seconds = time.perf_counter() - start
        time.sleep(0.5)
        stop.set()
        watcher.join()
        return [[f"a {len(body) / 1e6:.0f} MB JSON body (a million boxes)", status, f"{seconds:.2f} s",
                 f"+{server.peak_gb() - before:.2f} GB", summary(latencies)]]
    finally:
        server.close()


def slow(extra: list[str], sockets: int = 260, seconds: float = 12.0) -> list[list]:
    server = Server(extra)
    try:
        held = []
        for _ in range(sockets):
            connection = socket.create_connection((HOST, server.port), timeout=5)
            connection.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            held.append(connection)
        stop, latencies = threading.Event(), []
        watcher = threading.Thread(target=health_latencies, args=(server.url, stop, latencies))
        watcher.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # a byte now and then, as a slow client does
            for connection in held:
                with contextlib.suppress(OSError):
                    connection.sendall(b"X")
            time.sleep(1.0)
        stop.set()
        watcher.join()
        closed = 0
        for connection in held:
            connection.settimeout(0.2)
            try:
                closed += connection.recv(64) == b""
            except (ConnectionResetError, BrokenPipeError):
                closed += 1
            except TimeoutError:
                pass
            connection.close()
        return [[f"{sockets} connections that never finish their headers, {seconds:g} s", summary(latencies),
                 f"{closed}/{sockets} closed by the server"]]
    finally:
        server.close()


def disconnect(extra: list[str]) -> list[list]:
    server = Server(extra)
    try:
        big = httpx.post(f"{server.url}/api/images", content=big_image(), timeout=120,
                         headers={"Content-Type": "image/png"}).json()
        sample = httpx.post(f"{server.url}/api/samples/sample.png", timeout=60).json()["image"]
        small = {"image": sample, "regions": [{"box": [35, 97, 73, 135]}]}
        httpx.post(f"{server.url}/api/caption", json=small, timeout=120)  # warm: its embedding is cached
        start = time.perf_counter()
        httpx.post(f"{server.url}/api/caption", json=small, timeout=120)
        alone = time.perf_counter() - start
        rng = np.random.default_rng(0)
        side = big["width"]
        corners = rng.uniform(0, side, (64, 2, 2))
        body = json.dumps({"image": big["image"], "regions": [{"box": [*c.min(0).tolist(), *c.max(0).tolist()]}
                                                              for c in corners]}).encode()
        with socket.create_connection((HOST, server.port), timeout=10) as connection:
            connection.sendall(b"POST /api/caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(1.0)
        start = time.perf_counter()
        answer = httpx.post(f"{server.url}/api/caption", json=small, timeout=300)
        behind = time.perf_counter() - start
        return [[f"a client leaves a 64-box request on {side * side / 1e6:.0f} MP after 1 s", answer.status_code,
                 f"{behind:.2f} s (alone: {alone:.2f} s)"]]
    finally:
        server.close()


def load(extra: list[str], requests: int = 20) -> list[list]:
    record = sample_record()
    boxes = [list(region.box) for region in record.regions]
    expected = [region.captions[0] for region in record.regions]
    server = Server(extra)
    try:
        sample = httpx.post(f"{server.url}/api/samples/sample.png", timeout=60).json()["image"]
        run_clients(server.url, sample, 1, 2, boxes, expected)
        results = [run_clients(server.url, sample, count, requests, boxes, expected) for count in (1, 8)]
    finally:
        server.close()
    base = results[0]["throughput"]
    return [[r["clients"], r["requests"], r["errors"], f"{r['p50'] * 1000:.0f}", f"{r['p95'] * 1000:.0f}",
             f"{r['throughput']:.2f}", f"{r['throughput'] / base:.2f}x"] for r in results]


HEADERS = {
    "masks": ["case", "body", "status", "time", "server memory"],
    "flood": ["case", "status", "time", "server memory", "/api/health meanwhile"],
    "slow": ["case", "/api/health meanwhile", "slow connections"],
    "disconnect": ["case", "next request", "its wait"],
    "load": ["clients", "requests", "errors", "p50 ms", "p95 ms", "requests / s", "vs one client"],
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--model", help="a model for the server (default: the shipped one)")
    parser.add_argument("--out", type=Path, help="folder for hostile.md and hostile.json")
    args = parser.parse_args()
    chosen = [s for s in args.only.split(",") if s]
    if any(s not in SCENARIOS for s in chosen):
        parser.error(f"--only takes {', '.join(SCENARIOS)}")
    extra = ["--model", args.model] if args.model else []
    tables, report = [], {}
    for name in chosen:
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows = globals()[name](extra)
        report[name] = rows
        tables.append(f"**{name}**\n\n" + markdown_table(HEADERS[name], rows))
    text = f"`sca serve` against hostile clients, loopback, {cpu_name()} ({os.cpu_count()} cores)\n\n"
    text += "\n".join(tables)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "hostile.md").write_text(text)
        (args.out / "hostile.json").write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
