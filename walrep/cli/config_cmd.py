"""``walrep config check`` and ``walrep config import``.

``check`` loads a node's file the way the node does (file, then ``WALREP_...``
environment overrides, then defaults), validates it, and prints the effective
configuration with secrets redacted plus the figures that derive from it (lease TTL,
failover detection time, advertised event-sync address). ``import`` converts a WSO2
``deployment.yaml`` (see ``walrep.config.seed``). Exit status: 0 valid, 2 invalid or unusable
input (the message names the file and the key).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import click
import yaml

from walrep.config import WalrepConfig, load_config
from walrep.config.seed import import_seed, parse_seed, render
from walrep.db import normalize_url, redact
from walrep.errors import ConfigError
from walrep.node.settings import node_settings

EXIT_INVALID = 2
_QUERY_SECRET = re.compile(r"((?:^|[?&])password=)[^&]*", re.IGNORECASE)


class ConfigProblem(click.ClickException):
    """A configuration that cannot be used: exit status 2, no traceback."""

    exit_code = EXIT_INVALID


def redact_url(url: str) -> str:
    """The URL with its password (``user:pw@`` or ``?password=``) shown as ``***``."""
    return _QUERY_SECRET.sub(r"\1***", redact(url))


def load_or_fail(path: Path) -> WalrepConfig:
    """``load_config``, with a ``ConfigError`` turned into exit status 2."""
    try:
        return load_config(path)
    except ConfigError as e:
        raise ConfigProblem(str(e)) from e


def redacted(config: WalrepConfig) -> dict[str, Any]:
    """The configuration as plain data, passwords and URL passwords shown as ``***``."""
    data = config.model_dump(mode="json")
    for source, out in zip(config.datasources, data["datasources"], strict=True):
        out["url"] = redact_url(source.url)
        if source.password is not None:
            out["password"] = "***"
    return data


def derived(config: WalrepConfig) -> dict[str, Any]:
    """Figures that follow from the configuration (what the node will actually use)."""
    cluster = config.cluster
    timing = cluster.lease_timing()
    host, port = config.event_sync_advertised
    server = config.deployment.event_sync_server
    datasource = config.datasource(cluster.datasource)
    return {
        "lease_ttl_ms": timing.lease_ttl_ms,
        "safety_margin_ms": timing.safety_margin_ms,
        "leader_trusts_lease_ms": timing.valid_for_ms,
        "failover_detection_worst_ms": timing.lease_ttl_ms + timing.poll_interval_ms,
        "db_call_timeout_ms": cluster.db_call_timeout_ms or timing.valid_for_ms,
        "event_sync_listen": f"{server.host}:{server.port + config.port_offset}",
        "event_sync_advertised": f"{host}:{port}",
        "cluster_datasource_url": redact_url(datasource.url),
    }


def _explain(config: WalrepConfig, figures: dict[str, Any]) -> list[str]:
    """The derived figures as commented lines, each with where it comes from."""
    cluster = config.cluster
    margin_from = "safety_margin_ms" if cluster.safety_margin_ms else "default: one heartbeat"
    call_from = (
        "db_call_timeout_ms" if cluster.db_call_timeout_ms else "default: lease TTL - safety margin"
    )
    server = config.deployment.event_sync_server
    advertised_from = []
    if server.advertised_host:
        advertised_from.append("advertised_host")
    if server.advertised_port:
        advertised_from.append("advertised_port")
    elif config.port_offset:
        advertised_from.append(f"port {server.port} + port_offset {config.port_offset}")
    rows = [
        (
            "lease TTL",
            f"{figures['lease_ttl_ms']} ms = heartbeat_interval_ms {cluster.heartbeat_interval_ms}"
            f" x (heartbeat_max_retry {cluster.heartbeat_max_retry} + 1)",
        ),
        ("safety margin", f"{figures['safety_margin_ms']} ms ({margin_from})"),
        (
            "leader fences itself",
            f"{figures['leader_trusts_lease_ms']} ms after its last successful renew "
            "(lease TTL - safety margin)",
        ),
        (
            "failover detection",
            f"{figures['failover_detection_worst_ms']} ms worst case = lease TTL + "
            f"event_polling_interval_ms {cluster.event_polling_interval_ms}",
        ),
        ("database call timeout", f"{figures['db_call_timeout_ms']} ms ({call_from})"),
        ("event-sync listens on", figures["event_sync_listen"]),
        (
            "event-sync advertised",
            figures["event_sync_advertised"]
            + (f" ({', '.join(advertised_from)})" if advertised_from else ""),
        ),
        ("cluster datasource", f"{cluster.datasource}: {figures['cluster_datasource_url']}"),
    ]
    width = max(len(label) for label, _ in rows) + 1
    return ["# derived:"] + [f"#   {label + ':':<{width}} {text}" for label, text in rows]


def _problems(config: WalrepConfig, path: Path) -> list[str]:
    """Errors the model cannot see: datasource URLs walrep has no driver for, and
    relations between values that the node's settings refuse (``node_settings``)."""
    errors = []
    for index, datasource in enumerate(config.datasources):
        try:
            normalize_url(datasource.url)
        except ConfigError as e:
            errors.append(f"{path}: datasources.{index}.url ({datasource.name}): {e}")
    try:
        node_settings(config, secret=b"(not needed to check the relations)")
    except ConfigError as e:
        errors.append(f"{path}: {e}")
    return errors


def _warnings(config: WalrepConfig) -> list[str]:
    out = []
    for datasource in config.datasources:
        variable = datasource.password_env
        if variable and variable not in os.environ:
            out.append(
                f"datasource {datasource.name}: password_env {variable} is not set in this "
                "environment (the node needs it)"
            )
    server = config.deployment.event_sync_server
    if server.host in ("0.0.0.0", "::") and not server.advertised_host:
        out.append(
            f"deployment.event_sync_server.host is {server.host} and advertised_host is not "
            "set: the peer cannot connect to a wildcard address"
        )
    return out


@click.group("config")
def config_group() -> None:
    """Check a node's configuration, or import a WSO2 deployment.yaml."""


@config_group.command("check")
@click.option(
    "-c",
    "--config",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's YAML configuration file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: config, derived, warnings.")
def check(path: Path, as_json: bool) -> None:
    """Validate FILE and print the effective configuration (secrets redacted).

    The effective configuration is the file merged with WALREP_... environment overrides
    and defaults, exactly as a node would load it. Exit status 2 when it is invalid.
    """
    config = load_or_fail(path)
    errors = _problems(config, path)
    if errors:
        raise ConfigProblem("; ".join(errors))
    figures = derived(config)
    warnings = _warnings(config)
    if as_json:
        out = {"config": redacted(config), "derived": figures, "warnings": warnings}
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"# {path}: valid. Effective configuration (file + WALREP_... environment")
    click.echo("# + defaults; secrets shown as ***):")
    click.echo(yaml.safe_dump(redacted(config), sort_keys=False).rstrip())
    click.echo()
    click.echo("\n".join(_explain(config, figures)))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@config_group.command("import")
@click.argument("seed", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the walrep config here (default: standard output).",
)
@click.option("--node-id", default=None, help="node.id to use instead of wso2.carbon.id.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def import_(seed: Path, output: Path | None, node_id: str | None, force: bool) -> None:
    """Convert a WSO2 deployment.yaml (SEED) into a walrep configuration.

    Every seed key that is ignored or changed is listed in the notes (at the head of the
    output, and on standard error when writing to a file). Passwords are not copied:
    each datasource with a password gets password_env naming the variable to export.
    """
    try:
        text = seed.read_text()
    except OSError as e:
        raise ConfigProblem(f"{seed}: cannot read: {e.strerror}") from e
    try:
        result = import_seed(parse_seed(text, str(seed)), node_id=node_id, source=str(seed))
    except ConfigError as e:
        raise ConfigProblem(str(e)) from e
    rendered = render(result, source=seed.name)
    if output is None:
        click.echo(rendered, nl=False)
        return
    if output.exists() and not force:
        raise ConfigProblem(f"{output} exists: give --force to overwrite it")
    try:
        output.write_text(rendered)
    except OSError as e:
        raise ConfigProblem(f"{output}: cannot write: {e.strerror}") from e
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {output} ({len(result.notes)} notes); check it with:", err=True)
    click.echo(f"  walrep config check -c {output}", err=True)
