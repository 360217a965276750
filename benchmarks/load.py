"""Load benchmark of `sca serve`, on this machine's loopback only: throughput and latency for 1 and N concurrent
clients, and the server's peak memory for 32 boxes on a 25-megapixel image.

    python benchmarks/load.py                       # the shipped model, 1 and 8 clients, 20 requests each
    python benchmarks/load.py --clients 1,4,8 --requests 30 --out bench/

Every request is bounded (a timeout), the run is bounded (clients × requests), and the server it starts is
stopped at the end. Each request captions the three shapes of the bundled sample; every answer is checked.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from sca.assets.build import sample_record
from sca.tables import markdown_table

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start_server(port: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "sca", "serve", "--host", HOST, "--port", str(port), *extra]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/api/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
        if server.poll() is not None:
            raise RuntimeError(f"the server did not start: {server.stderr.read()[-2000:]}")
    server.kill()
    raise RuntimeError("the server did not answer within 120 s")


def peak_memory_gb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def run_clients(url: str, image: str, clients: int, requests: int, boxes: list[list[float]], expected: list[str]) -> dict:
    """`clients` threads, each sending `requests` caption requests one after another."""
    body = {"image": image, "regions": [{"box": box} for box in boxes]}

    def client(_):
        latencies, errors = [], 0
        with httpx.Client(timeout=120) as session:
            for _ in range(requests):
                start = time.perf_counter()
                try:
                    response = session.post(f"{url}/api/caption", json=body)
                    ok = response.status_code == 200 and [r["caption"] for r in response.json()["regions"]] == expected
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok
        return latencies, errors

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - start
    latencies = sorted(t for times, _ in results for t in times)
    return {"clients": clients, "requests": len(latencies), "errors": sum(e for _, e in results),
            "throughput": len(latencies) / elapsed, "p50": statistics.median(latencies),
            "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]}


def big_image(megapixels: float = 25.0) -> bytes:
    """A smooth 25-megapixel picture (a PNG small enough to upload) with some shapes on it."""
    side = int((megapixels * 1e6) ** 0.5)
    y, x = np.mgrid[0:side, 0:side]
    pixels = np.stack([(x * 255 // side), (y * 255 // side), ((x + y) * 127 // side)], -1).astype(np.uint8)
    for i in range(8):
        pixels[i * side // 8 : i * side // 8 + side // 16, i * side // 9 : i * side // 9 + side // 12] = (200, 30, 30)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--model", help="a model for the server (default: the shipped one)")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the 25-megapixel memory case")
    parser.add_argument("--out", type=Path, help="folder for load.md and load.json")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    if args.requests < 1 or any(c < 1 for c in clients) or max(clients) * args.requests > 2000:
        parser.error("clients and requests must be at least 1, and clients x requests at most 2000")

    record = sample_record()
    boxes = [list(region.box) for region in record.regions]
    expected = [region.captions[0] for region in record.regions]
    port = free_port()
    url = f"http://{HOST}:{port}"
    server = start_server(port, ["--model", args.model] if args.model else [])
    rows, report = [], {"load": [], "memory": None}
    try:
        sample = httpx.post(f"{url}/api/samples/sample.png", timeout=60).json()["image"]
        run_clients(url, sample, 1, 2, boxes, expected)  # warm-up: the image's embedding is cached from here on
        for count in clients:
            print(f"{count} client(s) x {args.requests} requests ...", file=sys.stderr, flush=True)
            result = run_clients(url, sample, count, args.requests, boxes, expected)
            report["load"].append(result)
            rows.append([result["clients"], result["requests"], result["errors"], f"{result['throughput']:.2f}",
                         f"{result['p50'] * 1000:.0f}", f"{result['p95'] * 1000:.0f}",
                         f"{result['p95'] / result['p50']:.2f}"])
        if not args.skip_memory:
            print("32 boxes on a 25-megapixel image ...", file=sys.stderr, flush=True)
            big = httpx.post(f"{url}/api/images", content=big_image(), timeout=120,
                             headers={"Content-Type": "image/png"}).json()
            side = big["width"]
            rng = np.random.default_rng(0)
            corners = rng.uniform(0, side, (32, 2, 2))
            big_boxes = [[*c.min(0).tolist(), *c.max(0).tolist()] for c in corners]
            start = time.perf_counter()
            response = httpx.post(f"{url}/api/caption", timeout=600,
                                  json={"image": big["image"], "regions": [{"box": b} for b in big_boxes]})
            report["memory"] = {"status": response.status_code, "seconds": time.perf_counter() - start,
                                "peak_memory_gb": peak_memory_gb(server.pid), "megapixels": side * side / 1e6}
    finally:
        server.terminate()
        server.wait(30)
    base = report["load"][0]["throughput"] if report["load"] else 1.0
    table = markdown_table(["clients", "requests", "errors", "requests / s", "p50 ms", "p95 ms", "p95 / p50"], rows,
                           note=f"Throughput of the most clients vs one: "
                                f"{report['load'][-1]['throughput'] / base:.2f}x.")
    if report["memory"]:
        memory = report["memory"]
        table += (f"\n32 boxes on a {memory['megapixels']:.0f}-megapixel image: HTTP {memory['status']} in "
                  f"{memory['seconds']:.1f} s; the server's peak memory {memory['peak_memory_gb']:.2f} GB.\n")
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "load.md").write_text(table)
        (args.out / "load.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
