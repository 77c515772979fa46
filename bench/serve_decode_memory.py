"""Server memory under uploads that decode big: one, then ``--concurrent`` (16) 4000x4000 float32 TIFFs and
16-bit PNGs (a few MB each), sent to ``ferkit serve`` on loopback; prints the server's RSS before and at peak
and the status codes (503: the decode budget, ``--max-inflight-mb``, refused it).

    python bench/serve_decode_memory.py [--size 4000] [--concurrent 16]
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
import time

import numpy as np
from serve_load import rss_mb, start


def uploads(size: int) -> dict[str, tuple[bytes, str]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    f = np.full((size, size), 0.5, np.float32)
    f[::7, ::5] = rng.random(f[::7, ::5].shape, dtype=np.float32)
    tiff, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(f, "F").save(tiff, "TIFF", compression="tiff_deflate")
    Image.fromarray((f * 65535).astype(np.uint16)).save(png, "PNG")
    return {"float32 TIFF": (tiff.getvalue(), "image/tiff"), "16-bit PNG": (png.getvalue(), "image/png")}


def main() -> int:
    import httpx

    from ferkit.serve.app import free_port

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--concurrent", type=int, default=16)
    a = ap.parse_args()
    port = free_port()
    proc = start(port, 8, 320, 5.0)
    url = f"http://127.0.0.1:{port}/v1/predict"
    try:
        for name, (data, ctype) in uploads(a.size).items():
            for n in (1, a.concurrent):
                base, peak, codes, stop = rss_mb(proc.pid), [], [], threading.Event()

                def watch(stop=stop, peak=peak):
                    while not stop.is_set():
                        peak.append(rss_mb(proc.pid))
                        time.sleep(0.01)

                def send(codes=codes, data=data, ctype=ctype):
                    r = httpx.post(url, content=data, headers={"content-type": ctype}, timeout=300)
                    codes.append(r.status_code)

                w = threading.Thread(target=watch)
                w.start()
                ts = [threading.Thread(target=send) for _ in range(n)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                stop.set()
                w.join()
                print(
                    f"{n:3d} x {a.size}x{a.size} {name} ({len(data) / 1e3:.0f} KB): server RSS {base:.0f} MB -> "
                    f"peak {max(peak):.0f} MB; {codes.count(200)} x 200, {codes.count(503)} x 503",
                    flush=True,
                )
                time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
