"""What every benchmark script records about the machine it ran on.

Imported by the scripts in this folder as ``bench_common`` (they run as
``python benchmarks/<script>.py``, which puts this folder first on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from walrep.bench.machine import cpu_model

REPO = Path(__file__).resolve().parent.parent


def filesystem_of(path: Path) -> tuple[str, str, str]:
    """(fs type, device, mount point) of the mount holding ``path``, from /proc/self/mounts."""
    best = ("?", "?", "")
    target = str(path.resolve())
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        device, mount, fstype = line.split()[:3]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[2]):
            best = (fstype, device, mount)
    return best


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return "?"
    return done.stdout.strip()


def machine_info(bench_dir: Path, watched: Sequence[str]) -> dict[str, Any]:
    """CPU, Python, file system of ``bench_dir``, load, commit, and uncommitted changes
    under the ``watched`` paths (the code the benchmark measures)."""
    fstype, device, mount = filesystem_of(bench_dir)
    cpu = cpu_model()
    changes = _git("status", "--porcelain", "--untracked-files=no", "--", *watched)
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "filesystem": fstype,
        "device": device,
        "mount": mount,
        "bench_dir": str(bench_dir),
        "loadavg_start": os.getloadavg(),
        "walrep_commit": _git("rev-parse", "--short", "HEAD"),
        "walrep_changes": changes.splitlines(),
    }
