"""``walrep node start -c FILE``: run one node of the HA pair until SIGTERM.

Exit status: 0 after a clean stop (SIGTERM/SIGINT), 1 if the node could not start or
run (a port taken, the log failed), 2 for an invalid configuration.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from walrep.cli.config_cmd import ConfigProblem, load_or_fail
from walrep.errors import ConfigError, WalrepError


@click.group("node")
def node_group() -> None:
    """Run a node: the log, event sync, the lease, the engine, the admin API and ingest."""


@node_group.command("start")
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The node's YAML configuration (conf/node1.yaml).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line an event: plain text, or one JSON object a line.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def start(config_path: Path, log_format: str, log_level: str) -> None:
    """Start a node and serve until SIGTERM (which releases the lease, then exits 0)."""
    from walrep.node.process import NodeProcess, configure_logging

    config = load_or_fail(config_path)
    configure_logging(log_format, log_level)
    try:
        process = NodeProcess(config)
    except ConfigError as e:
        raise ConfigProblem(str(e)) from e
    except WalrepError as e:
        click.echo(f"walrep node: {e}", err=True)
        sys.exit(1)
    sys.exit(asyncio.run(process.run()))
