"""The gateway's memory under large uploads: ``python -m bench.gateway_memory [FORMAT...]``.

For each format, a gateway alone on a private Redis (uploaded searches queue; no worker is
needed), 8 concurrent ``POST /searches`` of one image of MAX_IMAGE_PIXELS (or the format's
own limit), then the gateway's peak resident size (VmHWM) and its resident size (VmRSS) at
once and a few seconds later, from /proc/<pid>/status (Linux only). The integration test
``tests/integration/test_bad_input.py::test_eight_concurrent_largest_uploads_stay_under_1_gb``
asserts the bounds for the costliest of these.
"""

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image

from deploy.launcher import Processes, free_port, start_gateway, start_redis, wait_until

SIDE = 7071  # 49,999,041 pixels: just under the default MAX_IMAGE_PIXELS
WEBP_SIDE = 3535  # WebP pixels count four times: just under a quarter of it


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _bands(side: int, count: int) -> list[Image.Image]:
    gradient = Image.linear_gradient("L").resize((side, side))
    return [gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient, gradient][:count]


FORMATS: dict[str, Callable[[], bytes]] = {
    "progressive-cmyk-jpeg": lambda: _encode(
        Image.merge("CMYK", _bands(SIDE, 4)), "JPEG", progressive=True, subsampling=0
    ),
    "cmyk-jpeg": lambda: _encode(Image.merge("CMYK", _bands(SIDE, 4)), "JPEG"),
    "rgba-png": lambda: _encode(Image.merge("RGBA", _bands(SIDE, 4)), "PNG"),
    "grey16-png": lambda: _encode(
        _bands(SIDE, 1)[0].convert("I").point(lambda v: v * 257).convert("I;16"), "PNG"
    ),
    "cmyk-tiff": lambda: _encode(
        Image.merge("CMYK", _bands(SIDE, 4)), "TIFF", compression="tiff_deflate"
    ),
    "float-tiff": lambda: _encode(
        _bands(SIDE, 1)[0].convert("F"), "TIFF", compression="tiff_deflate"
    ),
    "rgba-webp": lambda: _encode(Image.merge("RGBA", _bands(WEBP_SIDE, 4)), "WEBP", lossless=True),
    "gif": lambda: _encode(_bands(SIDE, 1)[0].convert("P"), "GIF"),
}


def memory_kib(pid: int, field: str) -> int:
    """A memory figure of a process (VmRSS, VmHWM) from /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def memory_mb(pid: int, field: str) -> int:
    return memory_kib(pid, field) // 1024


def measure(name: str, data: bytes, uploads: int, redis_url: str, log_dir: Path) -> dict:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "ENVIRONMENT": "test",
        "API_KEY": "memory-benchmark-key",
        "DECODE_WAIT_SECONDS": "300",  # measure memory, not the wait
    }
    procs = Processes()
    port = free_port()
    try:
        pid = start_gateway(procs, env, port, log_dir).pid
        url = f"http://127.0.0.1:{port}/api/v1"
        wait_until(lambda: _answers(url), 60, "the gateway to answer", procs)
        idle = memory_mb(pid, "VmRSS")
        started = time.monotonic()

        def search(_):
            return requests.post(f"{url}/searches", files={"file": (name, data)}, timeout=600)

        with ThreadPoolExecutor(uploads) as pool:
            statuses = [r.status_code for r in pool.map(search, range(uploads))]
        seconds = time.monotonic() - started
        peak, after = memory_mb(pid, "VmHWM"), memory_mb(pid, "VmRSS")
        time.sleep(5)
        return {
            "format": name,
            "bytes": len(data),
            "statuses": statuses,
            "seconds": round(seconds, 1),
            "idle_mb": idle,
            "peak_mb": peak,
            "after_mb": after,
            "after_5s_mb": memory_mb(pid, "VmRSS"),
        }
    finally:
        procs.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code in (200, 503)
    except requests.RequestException:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("formats", nargs="*", metavar="FORMAT", help=", ".join(FORMATS))
    parser.add_argument("--uploads", type=int, default=8)
    args = parser.parse_args()
    unknown = set(args.formats) - set(FORMATS)
    if unknown:
        parser.error(f"unknown formats {sorted(unknown)}; choose from {', '.join(FORMATS)}")
    procs = Processes()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            redis_url = start_redis(procs, Path(tmp) / "redis")
            for name in args.formats or FORMATS:
                print(measure(name, FORMATS[name](), args.uploads, redis_url, Path(tmp)))
        finally:
            procs.stop()


if __name__ == "__main__":
    main()
