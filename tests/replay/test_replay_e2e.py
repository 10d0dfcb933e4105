"""The replay tool against what real nodes recorded: a two-process cluster (``walrep node
start``) through a SIGKILL of the active, then ``walrep replay`` run as an operator runs
it, on both data directories; and Ctrl-C in the middle of a replay."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import orjson

from tests.e2e.test_node_process import kill_under_load, two_nodes
from tests.replay.logs import APPS_DIR, write_log
from walrep.demo.procs import WALREP
from walrep.node.engine_host import DIGESTS_FILE
from walrep.node.engine_host import read_digest_chain as read_digests

WAIT_S = 30.0


def run(*args: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [WALREP, "replay", *map(str, args)], capture_output=True, timeout=120, check=False
    )


async def chain_reaches(path: Path, offset: int) -> None:
    """The node's digest chain has an entry at ``offset`` (a positive signal, bounded)."""
    async with asyncio.timeout(WAIT_S):
        while not any(o == offset for o, _ in read_digests(path)):  # noqa: ASYNC110 (a file)
            await asyncio.sleep(0.05)


async def test_replay_to_n_equals_the_live_nodes_digest_at_n_across_a_failover(
    tmp_path: Path,
) -> None:
    async with two_nodes(tmp_path, digest_interval=100) as pair:
        await kill_under_load(pair)  # node1 SIGKILLed after ~420 events; node2 took over
        two = pair.nodes["node2"]
        await chain_reaches(tmp_path / "node2" / DIGESTS_FILE, 1200)
        assert await two.signal(signal.SIGTERM) == 0
    configs = {n: tmp_path / f"{n}.yaml" for n in ("node1", "node2")}
    chains = {n: read_digests(tmp_path / n / DIGESTS_FILE) for n in configs}
    assert [o for o, _ in chains["node2"]] == list(range(100, 1300, 100))
    assert chains["node1"], "the killed active recorded digests before it died"

    for name, conf in configs.items():
        data = tmp_path / name
        # Each recorded digest (the old active's before the kill, the standby's that
        # carried on) equals the replay's at that offset.
        for offset, digest in chains[name][:: max(1, len(chains[name]) // 3)]:
            done = run("state", "--data", data, "-c", conf, "--to-offset", offset, "--json")
            assert done.returncode == 0, done.stderr
            doc = json.loads(done.stdout)
            assert (doc["offset"], doc["digest"]) == (offset, digest), name
        done = run("verify", "--data", data, "-c", conf, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["ok"] and report["checked"] >= len(chains[name])

    # The two nodes' logs agree where both hold them (node1's is a prefix: it died).
    done = run("verify", "--data", tmp_path / "node2", "-c", configs["node2"],
               "--against", tmp_path / "node1", "--json")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    against = json.loads(done.stdout)["against"]
    assert against["difference"] is None and against["chain_entries_compared"] >= 1
    assert against["to"] >= chains["node1"][-1][0]


def test_ctrl_c_stops_cleanly_with_a_partial_report(tmp_path: Path) -> None:
    data = write_log(tmp_path / "data", 60_000)
    proc = subprocess.Popen(
        [WALREP, "replay", "state", "--data", str(data.path), "--apps", str(APPS_DIR),
         "--to-offset", "60000", "--json", "--progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = b""
    while b"offset" not in seen:  # the bar is drawn: the replay runs (positive signal)
        chunk = os.read(proc.stderr.fileno(), 4096)
        assert chunk, f"replay exited first: {seen!r}"
        seen += chunk
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    doc = orjson.loads(out)
    assert doc["interrupted"] is True
    assert 0 < doc["offset"] < 60_000 and doc["offset"] % 4096 == 0  # a batch boundary
    assert doc["digest"] == data.engine_at(doc["offset"]).digest()
