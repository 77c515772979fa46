"""Prometheus text exposition, by hand: request counters, a latency histogram, faces processed, batch sizes."""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})  # others count as "other"


class _Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
        self.total += 1
        self.sum += v

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {c}' for b, c in zip(self.buckets, self.counts, strict=True)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        lab = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{lab} {self.sum:.6f}", f"{name}_count{lab} {self.total}"]
        return out


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = {}
        self.faces = 0
        self.images = 0
        self.batches = _Histogram(BATCH_BUCKETS)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # Label values come from a fixed set: a client inventing method names must not grow /metrics.
        method = method if method in METHODS else "other"
        with self._lock:
            self.requests[method, route, int(status)] += 1
            self.latency.setdefault(route, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, images: int, faces: int) -> None:
        with self._lock:
            self.batches.observe(images)
            self.images += images
            self.faces += faces

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP ferkit_requests_total HTTP requests by method, route and status.",
                "# TYPE ferkit_requests_total counter",
            ]
            for (m, r, s), n in sorted(self.requests.items()):
                lines.append(f'ferkit_requests_total{{method="{m}",route="{r}",status="{s}"}} {n}')
            lines += [
                "# HELP ferkit_request_duration_seconds Request latency.",
                "# TYPE ferkit_request_duration_seconds histogram",
            ]
            for r, h in sorted(self.latency.items()):
                lines += h.lines("ferkit_request_duration_seconds", f'route="{r}"')
            lines += [
                "# HELP ferkit_faces_processed_total Faces detected and classified.",
                "# TYPE ferkit_faces_processed_total counter",
                f"ferkit_faces_processed_total {self.faces}",
                "# HELP ferkit_images_processed_total Images analysed.",
                "# TYPE ferkit_images_processed_total counter",
                f"ferkit_images_processed_total {self.images}",
                "# HELP ferkit_batch_images Images per inference batch (micro-batching).",
                "# TYPE ferkit_batch_images histogram",
            ]
            lines += self.batches.lines("ferkit_batch_images")
        return "\n".join(lines) + "\n"
