"""The ``walrep`` command."""

from __future__ import annotations

import logging

import click

from walrep import __version__
from walrep.cli.bench_cmd import bench_group
from walrep.cli.cluster_cmd import cluster_group
from walrep.cli.config_cmd import config_group
from walrep.cli.demo import log_demo
from walrep.cli.failover_demo import demo
from walrep.cli.log_cmd import log_group
from walrep.cli.node_cmd import node_group
from walrep.cli.publish_cmd import publish
from walrep.cli.replay_cmd import replay_group


@click.group()
@click.version_option(__version__, prog_name="walrep")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level to stderr.")
def cli(verbose: bool) -> None:
    """walrep: a two-node active-passive replicated event log for analytics."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


cli.add_command(bench_group)
cli.add_command(cluster_group)
cli.add_command(config_group)
cli.add_command(demo)
log_group.add_command(log_demo)
cli.add_command(log_group)
cli.add_command(node_group)
cli.add_command(publish)
cli.add_command(replay_group)


def main() -> None:
    cli()
