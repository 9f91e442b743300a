"""Reading figures off the processes a benchmark drives: resident memory, Prometheus histograms, percentiles, and the
commit and machine every printed figure names."""

from __future__ import annotations

import math
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def metric_buckets(text: str, name: str, labels: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of one histogram series in a Prometheus text exposition."""
    pattern = re.compile(rf'^{name}_bucket\{{(?=[^}}]*{labels})[^}}]*le="([^"]+)"[^}}]*\}} ([0-9.e+-]+)$', re.M)
    return sorted((float(le), float(count)) for le, count in pattern.findall(text))


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """histogram_quantile: linear within the bucket the q-th observation falls into."""
    if not buckets or buckets[-1][1] == 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def difference(after: list[tuple[float, float]], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    git = shutil.which("git") or "git"
    commit = subprocess.run([git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)  # noqa: S603
    dirty = subprocess.run(  # noqa: S603
        [git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=False
    )
    return (f"commit {commit.stdout.strip() or '?'}{' (with uncommitted changes)' if dirty.stdout.strip() else ''}, "
            f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")  # fmt: skip


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"
