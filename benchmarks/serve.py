"""`serve` under bounded load on 127.0.0.1: latency and throughput against in-process ONNX Runtime, dynamic
batching on/off, Ray Serve 2 replicas vs one process, and a soak with bad requests mixed in.

    python -m benchmarks.serve --onnx exports/model.onnx [--images DIR] [--requests 200] [--concurrency 1,8,32]
                               [--waits 0,2,5] [--rounds 4] [--ray] [--soak 10000] [--out serve.json]

Every request is a real image upload to ``/classify`` (decode + preprocess + model, as `predict` does per
image); the baseline decodes and runs the same images in this process with :class:`OnnxClassifier`: one image
per call for latency, batches of 32 (`predict_files`) for throughput. The load generator is one asyncio
process (httpx), so it takes little CPU from the server. Prints the load average: on a shared machine compare
the ratios, which come from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISIC_TEST = Path(os.environ.get("SKINONNX_ISIC_DATA", ROOT.parent / "shared" / "data" / "isic-bm")) / "test"


def percentiles(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


def in_process(clf, images: list[Path], requests: int) -> dict:
    load = clf.preprocessing.pixels_from_file if clf.takes_uint8 else clf.preprocessing.from_file
    ms = []
    for i in range(requests):
        t0 = time.perf_counter()
        clf.predict_arrays(load(images[i % len(images)])[None])  # decode + preprocess + one ORT call
        ms.append((time.perf_counter() - t0) * 1e3)
    batch = [images[i % len(images)] for i in range(max(requests, 64))]
    t0 = time.perf_counter()
    n = sum(1 for p in clf.predict_files(batch, batch_size=32) if p.ok)
    return {"_ms": ms, "_n": n, "_wall": time.perf_counter() - t0}


def merged_in_process(rounds: list[dict]) -> dict:
    ms = [m for r in rounds for m in r["_ms"]]
    return {"single": percentiles(ms), "single_rps": round(1e3 / statistics.mean(ms), 1),
            "batch32_rps": round(sum(r["_n"] for r in rounds) / sum(r["_wall"] for r in rounds), 1)}


def start_server(onnx: str, port: int, *args: str) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "--onnx", onnx, "--port", str(port),
                             "--provider", "cpu", "--no-access-log", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"serve exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    raise SystemExit("serve did not become ready")


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


async def load(url: str, bodies: list[tuple[str, bytes]], concurrency: int) -> dict:
    """Send every (path, body) once with ``concurrency`` in flight; latency per request, status counts."""
    import httpx

    queue = list(enumerate(bodies))
    ms: list[float] = []
    statuses: dict[str, int] = {}
    lost = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker() -> None:
            nonlocal lost
            while queue:
                _, (path, body) = queue.pop()
                t0 = time.perf_counter()
                try:
                    r = await client.post(path, content=body)
                    statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                    if r.status_code == 200:
                        ms.append((time.perf_counter() - t0) * 1e3)
                except httpx.HTTPError:
                    lost += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"concurrency": concurrency, **(percentiles(ms) if ms else {}), "rps": round(len(ms) / wall, 1),
            "statuses": statuses, "lost": lost, "_ms": ms, "_wall": wall}


def merged(rows: list[dict]) -> dict:
    """Rounds of one measurement as one row: all latencies, throughput over the summed time."""
    ms = [m for r in rows for m in r["_ms"]]
    statuses: dict[str, int] = {}
    for r in rows:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return {"concurrency": rows[0]["concurrency"], **percentiles(ms),
            "rps": round(len(ms) / sum(r["_wall"] for r in rows), 1), "statuses": statuses,
            "lost": sum(r["lost"] for r in rows)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def bad_bodies(image: bytes, name: str) -> list[tuple[str, bytes]]:
    wrong = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 7], "datatype": "FP32", "data": [0] * 21}]})
    return [("/classify", b"not an image at all"), ("/classify", image[: len(image) // 3]),
            (f"/v2/models/{name}/infer", wrong.encode()), ("/v2/models/nope/infer", b"{}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--images", type=Path, default=ISIC_TEST)
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--waits", default="2", help="--max-wait-ms values to compare with batching on")
    parser.add_argument("--threads", type=int, default=None, help="ORT threads (server and baseline alike)")
    parser.add_argument("--ray", action="store_true", help="also Ray Serve, 2 replicas, vs one process")
    parser.add_argument("--soak", type=int, default=0, help="soak requests (10%% bad), 0: skip")
    parser.add_argument("--rounds", type=int, default=4, help="rounds alternating between the configurations")
    parser.add_argument("--port", type=int, default=18931)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    images = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:64]
    if not images:
        raise SystemExit(f"no images in {args.images}")
    bodies = [("/classify", p.read_bytes()) for p in images]
    name = Path(args.onnx).stem
    levels = [int(c) for c in args.concurrency.split(",")]
    thread_args = ["--threads", str(args.threads)] if args.threads else []
    result: dict = {"load_average_start": os.getloadavg(), "cpus": os.cpu_count(), "images": len(images),
                    "model": args.onnx}
    from skinonnx.deploy.runtime import OnnxClassifier

    clf = OnnxClassifier(args.onnx, "cpu", threads=args.threads)
    list(clf.predict_files(images[:4], batch_size=4))  # warm up
    configs = {"no batching": ["--max-batch", "1"]}
    configs.update({f"batching, wait {w} ms": ["--max-wait-ms", w] for w in args.waits.split(",")})
    # every server runs from the start (idle ones sleep: ORT spinning is off) and the rounds alternate between
    # them and the in-process baseline, so a change in the machine's load hits every configuration alike
    servers = {label: start_server(args.onnx, args.port + 2 + i, *extra, *thread_args)
               for i, (label, extra) in enumerate(configs.items())}
    ports = {label: args.port + 2 + i for i, label in enumerate(configs)}
    per_round = max(1, args.requests // args.rounds)
    baseline, samples = [], {label: {c: [] for c in levels} for label in configs}
    for r in range(args.rounds):
        baseline.append(in_process(clf, images, per_round))
        for label in configs:
            for c in levels:
                work = [bodies[(r * per_round + i) % len(bodies)] for i in range(per_round)]
                samples[label][c].append(asyncio.run(load(f"http://127.0.0.1:{ports[label]}", work, c)))
        print(f"round {r + 1}/{args.rounds} done, load average {os.getloadavg()[0]:.1f}", flush=True)
    for proc in servers.values():
        stop_server(proc)
    result["in_process"] = merged_in_process(baseline)
    print("in-process:", result["in_process"], flush=True)
    result["server"] = {label: [merged(samples[label][c]) for c in levels] for label in configs}
    for label, rows in result["server"].items():
        for row in rows:
            print(label, row, flush=True)
    base, none = result["in_process"], result["server"]["no batching"]
    result["ratios"] = {label: {
        f"c{levels[0]}_p50_added_ms": round(rows[0]["p50"] - base["single"]["p50"], 2),
        f"c{levels[-1]}_rps_vs_in_process_batch32": round(rows[-1]["rps"] / base["batch32_rps"], 3),
        f"c{levels[-1]}_rps_vs_no_batching": round(rows[-1]["rps"] / none[-1]["rps"], 3)}
        for label, rows in result["server"].items()}
    print("ratios:", result["ratios"], flush=True)
    if args.ray:
        result["ray"] = ray_vs_local(args, bodies, max(levels))
    if args.soak:
        result["soak"] = soak(args, bodies, name, thread_args)
    result["load_average_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


def ray_vs_local(args, bodies: list[tuple[str, bytes]], concurrency: int) -> dict:
    from ray import serve

    from skinonnx.deploy.ray_predict import start_ray
    from skinonnx.deploy.serving.ray_engine import deploy
    from skinonnx.deploy.serving.settings import ServeSettings

    work = [bodies[i % len(bodies)] for i in range(args.requests)]
    ray, _ = start_ray(None)
    try:
        settings = ServeSettings(Path(args.onnx).stem, access_log=False)
        url = deploy(args.onnx, settings, host="127.0.0.1", port=args.port + 1, provider="cpu", replicas=2)
        import httpx

        for _ in range(600):
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        ray_row = merged([asyncio.run(load(url, work, concurrency))])
        print("ray serve, 2 replicas:", ray_row, flush=True)
        serve.shutdown()
    finally:
        ray.shutdown()
    proc = start_server(args.onnx, args.port)
    local_row = merged([asyncio.run(load(f"http://127.0.0.1:{args.port}", work, concurrency))])
    stop_server(proc)
    print("local, one process:", local_row, flush=True)
    return {"ray_2_replicas": ray_row, "local": local_row, "rps_ratio": round(ray_row["rps"] / local_row["rps"], 3)}


def soak(args, bodies: list[tuple[str, bytes]], name: str, thread_args: list[str]) -> dict:
    bad = bad_bodies(bodies[0][1], name)
    work = [bad[i // 10 % len(bad)] if i % 10 == 9 else bodies[i % len(bodies)] for i in range(args.soak)]
    proc = start_server(args.onnx, args.port, *thread_args)
    asyncio.run(load(f"http://127.0.0.1:{args.port}", bodies[:32], 8))  # RSS after warm-up traffic
    start = rss_mb(proc.pid)
    t0 = time.perf_counter()
    row = merged([asyncio.run(load(f"http://127.0.0.1:{args.port}", work, 8))])
    end = rss_mb(proc.pid)
    code = stop_server(proc)
    fivexx = sum(v for k, v in row["statuses"].items() if k.startswith("5"))
    out = {**row, "requests": args.soak, "seconds": round(time.perf_counter() - t0, 1), "rss_start_mb": start,
           "rss_end_mb": end, "5xx": fivexx, "answered": sum(row["statuses"].values()), "exit_code": code}
    print("soak:", out, flush=True)
    return out


if __name__ == "__main__":
    main()
