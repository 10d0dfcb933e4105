"""``walrep demo``, the README's main command, end to end (a short run): two node
processes, a SIGKILL, failover, restart, switchover back, and a verdict of no loss and
no duplicate computed from the publisher's acks and the Store Query API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WALREP = str(Path(sys.executable).parent / "walrep")


def test_the_demo_ends_with_nothing_lost_and_nothing_counted_twice(tmp_path: Path) -> None:
    done = subprocess.run(
        [WALREP, "demo", "--events", "1500", "--rate", "1500", "--dir", str(tmp_path / "d")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "nothing lost, nothing counted twice" in out
    assert "first event acknowledged by node2" in out  # the failover timeline
    assert "switchover back" in out  # done, or reported as not done (closing note)
    logs = [(tmp_path / "d" / f"node{i}.log").read_text() for i in (1, 2)]
    assert all('"message"' in log for log in logs)  # each node's JSON log is kept
