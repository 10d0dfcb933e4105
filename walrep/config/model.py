"""Node configuration: YAML file, ``WALREP_...`` environment overrides, validated models.

Environment variables override the file: ``WALREP_CLUSTER__HEARTBEAT_INTERVAL_MS=200``
sets ``cluster.heartbeat_interval_ms`` (``__`` separates levels). Secrets never need to
be in the file: a datasource's ``password_env`` names the variable that holds its
password. Errors are ``ConfigError`` naming the file and the dotted key.

Seed (WSO2 ``deployment.yaml``) keys and their counterparts here are listed in
``docs/configuration.md``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from walrep.errors import ConfigError
from walrep.replica.lease import LeaseTiming

DEFAULT_DATASOURCE = "WALREP_DB"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSection(_Section):
    id: str = Field(min_length=1, max_length=128)  # seed: wso2.carbon.id
    data_dir: Path = Path("data")


class ClusterSection(_Section):
    """seed: cluster.config (RDBMSCoordinationStrategy)."""

    enabled: bool = True
    group_id: str = Field("group-1", min_length=1, max_length=128)  # seed: groupId
    datasource: str = DEFAULT_DATASOURCE  # seed: strategyConfig.datasource
    heartbeat_interval_ms: int = Field(250, gt=0)  # seed: heartbeatInterval (5000)
    heartbeat_max_retry: int = Field(3, ge=1)  # seed: heartbeatMaxRetry (5)
    event_polling_interval_ms: int = Field(100, gt=0)  # seed: eventPollingInterval (5000)
    # The leader stops trusting its lease this long before the database expires it.
    safety_margin_ms: int | None = Field(None, gt=0)
    db_call_timeout_ms: int | None = Field(None, gt=0)
    table_prefix: str = Field("walrep_", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,30}$")
    # warm: the passive applies every committed event (promotion replays nothing);
    # cold: as the seed, the passive only keeps the log, and its promotion restores the
    # newest snapshot and replays the log after it.
    standby: Literal["warm", "cold"] = "warm"

    @model_validator(mode="after")
    def _timing_is_consistent(self) -> ClusterSection:
        try:
            self.lease_timing()
        except ConfigError as e:  # not a ValueError: pydantic would not attach the key
            raise ValueError(f"{e}: raise heartbeat_max_retry or lower safety_margin_ms") from None
        return self

    @property
    def lease_ttl_ms(self) -> int:
        """The lease lives for one heartbeat plus ``heartbeat_max_retry`` missed ones."""
        return self.heartbeat_interval_ms * (self.heartbeat_max_retry + 1)

    def lease_timing(self) -> LeaseTiming:
        return LeaseTiming(
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            lease_ttl_ms=self.lease_ttl_ms,
            safety_margin_ms=self.safety_margin_ms or self.heartbeat_interval_ms,
            poll_interval_ms=self.event_polling_interval_ms,
        )


class DatasourceSection(_Section):
    """seed: wso2.datasources[*] (jdbcUrl, username, password)."""

    name: str
    url: str  # SQLAlchemy URL or the seed's jdbc:mysql://... / jdbc:postgresql://...
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None  # name of an environment variable holding the password
    connect_timeout_ms: int = Field(2000, gt=0)
    pool_size: int = Field(4, gt=0, le=64)

    def resolved_password(self) -> str | None:
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"datasource {self.name}: environment variable {self.password_env} is not set"
                )
            return value
        return self.password.get_secret_value() if self.password else None


class EventSyncServerSection(_Section):
    """seed: deployment.config.eventSyncServer."""

    host: str = "127.0.0.1"
    port: int = Field(9893, ge=0, le=65535)
    advertised_host: str | None = None
    advertised_port: int | None = Field(None, ge=1, le=65535)


class TlsSection(_Section):
    """Optional TLS for event sync (stdlib ssl): our certificate and the CA we trust."""

    cert_file: Path
    key_file: Path
    ca_file: Path


class EventSyncClientSection(_Section):
    """seed: deployment.config.eventSyncClientPool (one connection is enough here)."""

    connect_timeout_ms: int = Field(1000, gt=0)
    reconnect_backoff_max_ms: int = Field(2000, gt=0)


class ReplicationSection(_Section):
    """Log shipping from the active to the passive (the seed shipped without any ack)."""

    secret_env: str = "WALREP_CLUSTER_SECRET"  # the shared secret; never in the file
    ack_policy: Literal["all", "local"] = "all"
    on_standby_loss: Literal["degrade", "block"] = "degrade"
    standby_timeout_ms: int = Field(1000, gt=0)
    window_bytes: int = Field(8 * 1024 * 1024, gt=0)
    window_batches: int = Field(64, gt=0, le=4096)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024 * 1024, le=256 * 1024 * 1024)
    read_bytes_max: int = Field(1024 * 1024, gt=0)  # WAL bytes per Append message
    buffer_bytes_max: int = Field(32 * 1024 * 1024, gt=0)
    # Edges of the event-sync port: connections at once (authenticated or not), time to
    # authenticate, and silence (no complete message) before a connection is closed.
    max_connections: int = Field(4, ge=2, le=64)
    handshake_timeout_ms: int = Field(2000, gt=0)
    idle_timeout_ms: int = Field(3000, gt=0)
    tls: TlsSection | None = None

    def secret(self) -> bytes:
        value = os.environ.get(self.secret_env)
        if not value:
            raise ConfigError(
                f"deployment.replication.secret_env: variable {self.secret_env} is not set"
            )
        return value.encode()


class LogSection(_Section):
    """The write-ahead log in ``node.data_dir`` (walrep's own; no seed counterpart)."""

    segment_bytes_max: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    max_event_bytes: int = Field(1024 * 1024, gt=0)
    max_batch_bytes: int = Field(8 * 1024 * 1024, gt=0)
    fsync_policy: Literal["always", "interval_ms", "never"] = "always"
    fsync_interval_ms: int = Field(100, gt=0)
    # The newest frames kept in memory so the active ships them without reading the file.
    recent_frames_bytes: int = Field(8 * 1024 * 1024, ge=0, le=1024 * 1024 * 1024)


class AppendSection(_Section):
    """Bounds of the active's append path (admission control with backpressure)."""

    # Appends written but not yet committed; one more waits for room (backpressure).
    max_pending: int = Field(4096, gt=0, le=1_000_000)
    max_uncommitted_events: int = Field(1_000_000, gt=0)
    # Appends waiting for room; one more is refused at once (OverloadedError, HTTP 503).
    max_queued: int = Field(4096, ge=0, le=1_000_000)


class DeploymentSection(_Section):
    """seed: deployment.config."""

    type: Literal["ha", "single"] = "ha"
    passive_node_details_wait_timeout_ms: int = Field(10_000, gt=0)  # seed: 300000
    passive_node_details_retry_sleep_ms: int = Field(100, gt=0)  # seed: 500
    event_buffer_capacity: int = Field(20_000, gt=0)  # seed: eventByteBufferQueueCapacity
    event_sync_server: EventSyncServerSection = EventSyncServerSection()
    event_sync_client: EventSyncClientSection = EventSyncClientSection()
    replication: ReplicationSection = ReplicationSection()


class StatePersistenceSection(_Section):
    """seed: state.persistence. Snapshots of engine state (docs/snapshots.md).

    The numeric bounds repeat ``walrep.engine.snapshots.format`` (this package imports
    nothing of the engine); a test keeps them equal.
    """

    enabled: bool = True  # seed: enabled
    interval_s: int = Field(60, gt=0, le=7 * 86_400)  # seed: intervalInMin (x 60)
    revisions_to_keep: int = Field(2, ge=1, le=1000)  # seed: revisionsToKeep
    store: Literal["db", "file"] = "db"  # seed: persistenceStore (DB / FileSystem store)
    datasource: str | None = None  # seed: config.datasource; None: cluster.datasource
    # seed: config.table; <table>_chunks and <table>_fence too (63-char identifier limits)
    table: str = Field("walrep_snapshots", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")
    directory: Path = Path("snapshots")  # file store; relative: under node.data_dir
    digest_interval: int = Field(1_000_000, gt=0)  # offsets between digest-chain entries
    max_snapshot_bytes: int = Field(1024**3, ge=1024 * 1024, le=4 * 1024**3)  # state bytes
    chunk_bytes: int = Field(512 * 1024, ge=4 * 1024, le=4 * 1024 * 1024)  # per DB row
    db_call_timeout_ms: int = Field(60_000, gt=0)  # one save, load or trim transaction


class AdminSection(_Section):
    """The admin API (both nodes): /health, /ready, /active, /standby, /status, /metrics."""

    host: str = "127.0.0.1"
    port: int = Field(7080, ge=0, le=65535)  # + port_offset (0: any free port)
    # POST /switchover needs Authorization: Bearer <this variable>; unset: refused.
    token_env: str = Field("WALREP_ADMIN_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    switchover_timeout_ms: int = Field(10_000, gt=0, le=600_000)

    def token(self) -> str | None:
        return os.environ.get(self.token_env) or None


class IngestSection(_Section):
    """HTTP ingest, ``POST /events``: listening only on the active (docs/api.md)."""

    host: str = "127.0.0.1"
    http_port: int = Field(7280, ge=0, le=65535)  # + port_offset (0: any free port)
    tcp_port: int = Field(9611, ge=0, le=65535)  # binary TCP ingest (docs/formats.md)
    tcp_max_in_flight: int = Field(64, gt=0, le=10_000)  # pipelined requests a connection
    tcp_max_connections: int = Field(256, gt=0, le=100_000)
    # "token": Authorization: Bearer <the variable named by token_env>; "none": open
    # (must be said explicitly: a node refuses to start with "token" and no token set).
    auth: Literal["token", "none"] = "token"
    token_env: str = Field("WALREP_INGEST_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    max_events_per_request: int = Field(10_000, gt=0, le=1_000_000)

    def token(self) -> str | None:
        """The ingest token (None with ``auth: none``); ``ConfigError`` if it is unset."""
        if self.auth == "none":
            return None
        value = os.environ.get(self.token_env, "")
        if not value:
            raise ConfigError(
                f"ingest.auth is token but {self.token_env} is not set "
                "(set it, or say ingest.auth: none to accept events without a token)"
            )
        return value


class QuerySection(_Section):
    """The Store Query API, ``POST /stores/query``: listening only on the active."""

    host: str = "127.0.0.1"
    port: int = Field(7370, ge=0, le=65535)  # + port_offset (0: any free port)


class EngineSection(_Section):
    """The apps both nodes run (seed: the siddhi-files deployment directory)."""

    apps_dir: Path = Path("conf/apps")  # relative: to the directory the node starts in


def _default_datasources() -> list[DatasourceSection]:
    return [DatasourceSection(name=DEFAULT_DATASOURCE, url="sqlite+aiosqlite:///data/cluster.db")]


class WalrepConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WALREP_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    node: NodeSection
    cluster: ClusterSection = ClusterSection()
    deployment: DeploymentSection = DeploymentSection()
    log: LogSection = LogSection()
    appends: AppendSection = AppendSection()
    state_persistence: StatePersistenceSection = StatePersistenceSection()
    admin: AdminSection = AdminSection()
    ingest: IngestSection = IngestSection()
    query: QuerySection = QuerySection()
    engine: EngineSection = EngineSection()
    datasources: list[DatasourceSection] = Field(default_factory=_default_datasources)
    port_offset: int = Field(0, ge=0, le=10_000)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # the environment overrides the file

    @model_validator(mode="after")
    def _datasource_exists(self) -> WalrepConfig:
        names = [d.name for d in self.datasources]
        if len(set(names)) != len(names):
            raise ValueError(f"datasources: names must be unique: {names}")
        if self.cluster.datasource not in names:
            raise ValueError(
                f"cluster.datasource {self.cluster.datasource!r} is not one of {names}"
            )
        snapshots = self.state_persistence.datasource
        if snapshots is not None and snapshots not in names:
            raise ValueError(f"state_persistence.datasource {snapshots!r} is not one of {names}")
        return self

    def port(self, configured: int) -> int:
        """A configured port with ``port_offset`` applied (0 stays 0: any free port)."""
        return configured + self.port_offset if configured else 0

    def datasource(self, name: str) -> DatasourceSection:
        return next(d for d in self.datasources if d.name == name)

    @property
    def event_sync_advertised(self) -> tuple[str, int]:
        """Host and port the peer should connect to (``port_offset`` applied)."""
        server = self.deployment.event_sync_server
        port = server.advertised_port or server.port + self.port_offset
        return server.advertised_host or server.host, port


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> WalrepConfig:
    """Read, merge with the environment and validate; ``ConfigError`` names file and key."""
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"{file}: cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the top level must be a mapping")
    raw |= overrides or {}
    try:
        return WalrepConfig(**raw)
    except ValidationError as e:
        raise ConfigError(f"{file}: {describe_errors(e)}") from e


def describe_errors(error: ValidationError) -> str:
    """One line per problem: the dotted key, the message, and the variable that set it."""
    problems = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        source = _env_source(err["loc"])
        text = f"{key}: {message}" if key else message  # top-level messages name their keys
        problems.append(text + (f" (set by {source})" if source else ""))
    return "; ".join(problems)


def _env_source(loc: tuple[int | str, ...]) -> str | None:
    """The ``WALREP_...`` variable that supplied the value at ``loc``, if one did."""
    parts = [str(p) for p in loc]
    while parts:
        name = "WALREP_" + "__".join(parts).upper()
        if name in os.environ:
            return name
        parts.pop()
    return None
