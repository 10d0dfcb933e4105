"""Import of a WSO2 Streaming Integrator ``deployment.yaml`` (the "seed") as a walrep config.

Pure: text or parsed YAML in, a config dict and notes out; no files, no environment.
``walrep config import`` does the reading and writing.

Both spellings of the seed's sections are accepted: the real file's top-level dotted
keys (``cluster.config:``, ``wso2.datasources:``) and nested mappings (``cluster:
{config: ...}``); a top-level list of one-key mappings (as the seed guide prints its
snippets, ``- cluster.config: ...``) is merged first.

Every seed key of the sections walrep knows (``wso2.carbon``, ``cluster.config``,
``deployment.config``, ``state.persistence``, ``wso2.datasources``) is either mapped
or named in a note that says why it was ignored or changed. Passwords are never
written: a datasource with a password gets ``password_env`` and a note to export it.
The result is validated with ``WalrepConfig`` (without environment overrides) before
it is returned.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from walrep.config.model import ClusterSection, WalrepConfig
from walrep.db import normalize_url, redact
from walrep.errors import ConfigError

PASSWORD_ENV_PREFIX = "WALREP_DB_PASSWORD_"
_DEFAULTS = ClusterSection()
_KNOWN_SECTIONS = (
    "wso2.carbon",
    "cluster.config",
    "deployment.config",
    "state.persistence",
    "wso2.datasources",
)
_RDBMS_STRATEGY = "org.wso2.carbon.cluster.coordinator.rdbms.RDBMSCoordinationStrategy"
_ENV_PLACEHOLDER = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")
_SEC_PLACEHOLDER = re.compile(r"^\$\{sec:[^}]+\}$")
_SUPPORTED_JDBC = {"mysql", "mariadb", "postgresql", "postgres"}

# Keys of the seed that walrep does not need, with the reason given in the note.
_IGNORED = {
    "deployment.config.byteBufferExtractorThreadPoolSize": (
        "not needed: one asyncio loop reads the passive's buffer; ignored"
    ),
    "deployment.config.eventSyncServer.bossThreads": (
        "not needed: one asyncio loop serves the event-sync port; ignored"
    ),
    "deployment.config.eventSyncServer.workerThreads": (
        "not needed: one asyncio loop serves the event-sync port; ignored"
    ),
    "cluster.config.coordinationStrategyClass": (
        "ignored: walrep always coordinates through the RDBMS datasource "
        "(a lease with an epoch, on the database clock)"
    ),
}
_CLIENT_POOL_REASON = (
    "no counterpart: walrep ships events over one persistent, acknowledged connection "
    "to the passive, not a client pool; ignored"
)
_DATASOURCE_IGNORED = {
    "description": "informational only; ignored",
    "jndiConfig": "no JNDI in walrep; ignored",
    "driverClassName": (
        "the driver follows from the URL (aiomysql, asyncpg or aiosqlite); ignored"
    ),
    "connectionTestQuery": "connections are checked before use (pre-ping); ignored",
    "validationTimeout": "connections are checked before use (pre-ping); ignored",
    "idleTimeout": "pool eviction is not configurable; ignored",
    "maxLifetime": "pool eviction is not configurable; ignored",
    "minIdle": "the pool opens connections on demand; ignored",
    "isAutoCommit": "every coordination step is an explicit transaction; ignored",
}
# state.persistence keys and the names they are planned to get (DESIGN "Configuration").
_TIMING_KEYS = {  # walrep key -> seed key (under cluster.config.strategyConfig)
    "cluster.heartbeat_interval_ms": "heartbeatInterval",
    "cluster.heartbeat_max_retry": "heartbeatMaxRetry",
    "cluster.event_polling_interval_ms": "eventPollingInterval",
}
_PERSISTENCE = {  # seed key (under state.persistence) -> walrep key
    "enabled": "state_persistence.enabled",
    "revisionsToKeep": "state_persistence.revisions_to_keep",
    "config.datasource": "state_persistence.datasource",
    "config.table": "state_persistence.table",
    "config.location": "state_persistence.directory",
}
# walrep key -> seed key, for error messages about the imported result.
_ORIGINS = {
    "node.id": "wso2.carbon.id",
    "port_offset": "wso2.carbon.ports.offset",
    "cluster.enabled": "cluster.config.enabled",
    "cluster.group_id": "cluster.config.groupId",
    "cluster.datasource": "cluster.config.strategyConfig.datasource",
    "cluster.heartbeat_interval_ms": "cluster.config.strategyConfig.heartbeatInterval",
    "cluster.heartbeat_max_retry": "cluster.config.strategyConfig.heartbeatMaxRetry",
    "cluster.event_polling_interval_ms": "cluster.config.strategyConfig.eventPollingInterval",
    "state_persistence.interval_s": "state.persistence.intervalInMin",
    "state_persistence.store": "state.persistence.persistenceStore",
    **{walrep: f"state.persistence.{seed}" for seed, walrep in _PERSISTENCE.items()},
    "deployment.type": "deployment.config.type",
    "deployment.passive_node_details_wait_timeout_ms": (
        "deployment.config.passiveNodeDetailsWaitTimeOutMillis"
    ),
    "deployment.passive_node_details_retry_sleep_ms": (
        "deployment.config.passiveNodeDetailsRetrySleepTimeMillis"
    ),
    "deployment.event_buffer_capacity": "deployment.config.eventByteBufferQueueCapacity",
    "deployment.event_sync_server.host": "deployment.config.eventSyncServer.host",
    "deployment.event_sync_server.port": "deployment.config.eventSyncServer.port",
    "deployment.event_sync_server.advertised_host": (
        "deployment.config.eventSyncServer.advertisedHost"
    ),
    "deployment.event_sync_server.advertised_port": (
        "deployment.config.eventSyncServer.advertisedPort"
    ),
}


class SeedImport(NamedTuple):
    """The walrep config (plain data, ready for YAML) and the notes about the import."""

    config: dict[str, Any]
    notes: list[str]


class _FileOnly(WalrepConfig):
    """``WalrepConfig`` that ignores ``WALREP_...`` variables: validates the data alone."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def validate_without_env(config: Mapping[str, Any]) -> WalrepConfig:
    """Validate plain config data as a file would be, without environment overrides."""
    return _FileOnly(**config)


# --- parsing -------------------------------------------------------------------------


def parse_seed(text: str, source: str = "seed") -> dict[str, Any]:
    """The seed's YAML as one mapping (a top-level list of one-key mappings is merged)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if isinstance(data, list):
        merged: dict[str, Any] = {}
        for item in data:
            if not isinstance(item, Mapping):
                raise ConfigError(f"{source}: a top-level list must hold mappings")
            merged.update(item)
        data = merged
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    return data


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    """``tree[dotted]``, trying the dotted key itself and then nested mappings."""
    if dotted in tree:
        return tree[dotted]
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # "a.b" + "c", then "a" + "b.c"
        child = tree.get(".".join(parts[:cut]))
        if isinstance(child, Mapping):
            found = _lookup(child, ".".join(parts[cut:]))
            if found is not None:
                return found
    return None


def _flatten(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Leaf keys of a nested mapping as ``prefix.a.b -> value`` (lists are leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}"
        if isinstance(value, Mapping) and value:
            out |= _flatten(value, path)
        else:
            out[path] = value
    return out


def _show(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()


@dataclass(frozen=True, slots=True)
class _Ignored:
    """A seed key that was ignored (or dropped), grouped with others of its reason."""

    section: str  # e.g. "deployment.config" or "wso2.datasources.dataSources"
    item: str | None  # the datasource name, for list sections
    key: str  # relative to the section (and item)
    value: str | None  # shown in the note, or None
    reason: str


def _render_notes(entries: list[str | _Ignored]) -> list[str]:
    """Notes in order; ignored keys with one reason and section become one note."""
    placed: list[str | list[_Ignored]] = []
    groups: dict[tuple[str, str], list[_Ignored]] = {}
    for entry in entries:
        if isinstance(entry, str):
            placed.append(entry)
            continue
        group = groups.get((entry.section, entry.reason))
        if group is None:
            group = groups[(entry.section, entry.reason)] = []
            placed.append(group)
        group.append(entry)
    return [e if isinstance(e, str) else _render_group(e) for e in placed]


def _render_group(group: list[_Ignored]) -> str:
    section, reason = group[0].section, group[0].reason
    items_of: dict[str, list[str]] = {}  # displayed key -> the datasources it was found in
    for entry in group:
        shown = entry.key if entry.value is None else f"{entry.key} ({entry.value})"
        names = items_of.setdefault(shown, [])
        if entry.item is not None and entry.item not in names:
            names.append(entry.item)
    lists = list(items_of.values())
    if all(names == lists[0] for names in lists):
        return f"{_where(section, lists[0])}.{_keys(list(items_of))}: {reason}"
    parts = [f"{_where(section, names)}.{key}" for key, names in items_of.items()]
    return f"{'; '.join(parts)}: {reason}"


def _where(section: str, items: list[str]) -> str:
    return f"{section}[{', '.join(items)}]" if items else section


def _keys(keys: list[str]) -> str:
    """``a.b.c`` for one key; ``a.b.{c, d}`` for keys sharing ``a.b``."""
    if len(keys) == 1:
        return keys[0]
    split = [k.split(" (", 1)[0].split(".") for k in keys]
    common: list[str] = []
    for parts in zip(*(s[:-1] for s in split), strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    tails = [k[len(".".join(common)) + 1 :] if common else k for k in keys]
    prefix = ".".join(common) + "." if common else ""
    return f"{prefix}{{{', '.join(tails)}}}"


# --- the mapping ---------------------------------------------------------------------


class _Importer:
    def __init__(self, seed: Mapping[str, Any], node_id: str | None, source: str) -> None:
        self.seed = seed
        self.node_id = node_id
        self.source = source
        self.entries: list[str | _Ignored] = []
        self.config: dict[str, Any] = {}

    def note(self, text: str) -> None:
        self.entries.append(text)

    def ignore(
        self,
        section: str,
        key: str,
        value: Any,
        reason: str,
        *,
        item: str | None = None,
        show: bool = True,
    ) -> None:
        shown = _show(value) if show and value is not None else None
        self.entries.append(_Ignored(section, item, key, shown, reason))

    def section(self, dotted: str) -> dict[str, Any]:
        """A seed section's leaf keys, relative to the section (``a.b -> value``)."""
        found = _lookup(self.seed, dotted)
        if found is None:
            return {}
        if not isinstance(found, Mapping):
            raise ConfigError(f"{self.source}: {dotted} must be a mapping")
        return {k.removeprefix("."): v for k, v in _flatten(found, "").items()}

    def put(self, walrep_key: str, value: Any) -> None:
        target = self.config
        *parents, last = walrep_key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value

    def rest(self, section: str, keys: dict[str, Any]) -> None:
        """Note every key of a section that no rule consumed."""
        for key, value in keys.items():
            reason = _IGNORED.get(f"{section}.{key}", "no counterpart in walrep; ignored")
            self.ignore(section, key, value, reason)

    # --- sections ------------------------------------------------------------------

    def carbon(self) -> None:
        keys = self.section("wso2.carbon")
        seed_id = keys.pop("id", None)
        offset = keys.pop("ports.offset", None)
        if self.node_id is not None:
            if seed_id is not None and str(seed_id) != self.node_id:
                self.note(f"wso2.carbon.id ({seed_id}): replaced by --node-id {self.node_id}")
            self.put("node.id", self.node_id)
        elif seed_id is not None:
            self.put("node.id", str(seed_id))
        else:
            raise ConfigError(f"{self.source}: wso2.carbon.id is missing: give --node-id")
        if offset is not None:
            self.put("port_offset", offset)
        for key in [k for k in keys if k in ("name", "type")]:
            self.ignore("wso2.carbon", key, keys.pop(key), "informational only; ignored")
        self.rest("wso2.carbon", keys)

    def cluster(self) -> None:
        keys = self.section("cluster.config")
        simple = {
            "enabled": "cluster.enabled",
            "groupId": "cluster.group_id",
            "strategyConfig.datasource": "cluster.datasource",
            "strategyConfig.heartbeatInterval": "cluster.heartbeat_interval_ms",
            "strategyConfig.heartbeatMaxRetry": "cluster.heartbeat_max_retry",
            "strategyConfig.eventPollingInterval": "cluster.event_polling_interval_ms",
        }
        timings: dict[str, Any] = {}
        for seed_key, walrep_key in simple.items():
            if seed_key in keys:
                value = keys.pop(seed_key)
                self.put(walrep_key, value)
                if walrep_key in _TIMING_KEYS:
                    timings[walrep_key] = value
        strategy_class = keys.pop("coordinationStrategyClass", None)
        if strategy_class == _RDBMS_STRATEGY:
            self.ignore(
                "cluster.config",
                "coordinationStrategyClass",
                None,
                _IGNORED["cluster.config.coordinationStrategyClass"],
            )
        elif strategy_class is not None:
            self.ignore(
                "cluster.config",
                "coordinationStrategyClass",
                strategy_class,
                "not supported: walrep coordinates through the RDBMS datasource "
                "(cluster.datasource) only; ignored",
            )
        if self.config.get("cluster", {}).get("enabled") is False:
            self.note(
                "cluster.config.enabled (false): kept: this node takes no part in failover "
                "(cluster.enabled: false)"
            )
        if timings:
            self.timing_notes(timings)
        self.rest("cluster.config", keys)

    def timing_notes(self, timings: dict[str, Any]) -> None:
        cluster = self.config["cluster"]
        try:
            retry = int(cluster.get("heartbeat_max_retry", _DEFAULTS.heartbeat_max_retry))
            interval = int(cluster.get("heartbeat_interval_ms", _DEFAULTS.heartbeat_interval_ms))
            polling = int(
                cluster.get("event_polling_interval_ms", _DEFAULTS.event_polling_interval_ms)
            )
        except (TypeError, ValueError):
            return  # validation names the key
        if retry < 1:
            self.note(
                f"cluster.config.strategyConfig.heartbeatMaxRetry ({retry}): changed to 1: "
                "walrep's lease must outlive at least one missed heartbeat"
            )
            cluster["heartbeat_max_retry"] = retry = 1
        ttl = interval * (retry + 1)
        if retry == 1 and interval > 1:
            # The default safety margin (one heartbeat) would leave the leader no renew
            # before its own deadline: half a heartbeat instead.
            cluster["safety_margin_ms"] = interval // 2
            self.note(
                f"cluster.config.strategyConfig.heartbeatMaxRetry (1): kept; "
                f"cluster.safety_margin_ms set to {interval // 2} (half a heartbeat) so that "
                "the leader can renew at least once before it fences itself"
            )
        given = ", ".join(f"{_TIMING_KEYS[k]} {timings[k]}" for k in _TIMING_KEYS if k in timings)
        default_ttl = _DEFAULTS.lease_ttl_ms
        self.note(
            f"cluster.config.strategyConfig ({given}): kept as given. They make a lease TTL "
            f"of {ttl} ms ({interval} x ({retry} + 1)) and a worst-case failover detection "
            f"of {ttl + polling} ms (TTL + polling interval {polling} ms). walrep's defaults "
            f"(heartbeat_interval_ms {_DEFAULTS.heartbeat_interval_ms}, heartbeat_max_retry "
            f"{_DEFAULTS.heartbeat_max_retry}, event_polling_interval_ms "
            f"{_DEFAULTS.event_polling_interval_ms}) make {default_ttl} ms and "
            f"{default_ttl + _DEFAULTS.event_polling_interval_ms} ms: delete these keys from "
            "the cluster section to use them."
        )

    def deployment(self) -> None:
        keys = self.section("deployment.config")
        if not keys:
            self.put("deployment.type", "single")
            self.note("deployment.config: absent; deployment.type: single (no passive peer)")
            return
        kind = keys.pop("type", None)
        if kind is not None and str(kind).lower() != "ha":
            raise ConfigError(
                f"{self.source}: deployment.config.type {kind!r} is not supported: "
                "walrep runs a two-node 'ha' pair (or one node, deployment.type: single)"
            )
        self.put("deployment.type", "ha")
        simple = {
            "passiveNodeDetailsWaitTimeOutMillis": (
                "deployment.passive_node_details_wait_timeout_ms"
            ),
            "passiveNodeDetailsRetrySleepTimeMillis": (
                "deployment.passive_node_details_retry_sleep_ms"
            ),
            "eventByteBufferQueueCapacity": "deployment.event_buffer_capacity",
            "eventSyncServer.host": "deployment.event_sync_server.host",
            "eventSyncServer.port": "deployment.event_sync_server.port",
            "eventSyncServer.advertisedHost": "deployment.event_sync_server.advertised_host",
            "eventSyncServer.advertisedPort": "deployment.event_sync_server.advertised_port",
        }
        for seed_key, walrep_key in simple.items():
            if seed_key not in keys:
                continue
            value = keys.pop(seed_key)
            if seed_key == "eventSyncServer.port":
                value = self.event_sync_port(value)
            self.put(walrep_key, value)
        server = self.config["deployment"].get("event_sync_server", {})
        if server.get("host") in ("0.0.0.0", "::") and not server.get("advertised_host"):
            self.note(
                f"deployment.config.eventSyncServer.host ({server['host']}): kept; set "
                "advertised_host too: the peer cannot connect to a wildcard address"
            )
        for key in [k for k in keys if k.startswith("eventSyncClientPool.")]:
            self.ignore("deployment.config", key, keys.pop(key), _CLIENT_POOL_REASON)
        self.rest("deployment.config", keys)

    def event_sync_port(self, port: Any) -> Any:
        """Keep the seed's listening port: walrep adds ``port_offset`` to it, WSO2 did not."""
        offset = self.config.get("port_offset")
        if isinstance(offset, int) and isinstance(port, int) and offset and port - offset > 0:
            self.note(
                f"deployment.config.eventSyncServer.port ({port}): written as {port - offset}: "
                f"walrep adds port_offset ({offset}) to it, so the node still listens on {port}"
            )
            return port - offset
        return port

    def persistence(self) -> None:
        keys = self.section("state.persistence")
        for seed_key, walrep_key in _PERSISTENCE.items():
            if seed_key in keys:
                self.put(walrep_key, keys.pop(seed_key))
        if "intervalInMin" in keys:
            minutes = keys.pop("intervalInMin")
            seconds = minutes
            if isinstance(minutes, int | float) and not isinstance(minutes, bool) and minutes > 0:
                seconds = max(round(minutes * 60), 1)
                self.note(f"state.persistence.intervalInMin ({minutes}): interval_s {seconds}")
            self.put("state_persistence.interval_s", seconds)  # else validation names the key
        if "persistenceStore" in keys:
            self.persistence_store(str(keys.pop("persistenceStore")))
        self.rest("state.persistence", keys)

    def persistence_store(self, class_name: str) -> None:
        """Siddhi's store class -> ``db`` or ``file`` (walrep always writes full snapshots)."""
        simple = class_name.rsplit(".", 1)[-1]
        where = f"state.persistence.persistenceStore ({simple})"
        if simple.endswith("DBPersistenceStore"):
            store = "db"
        elif simple.endswith("FileSystemPersistenceStore"):
            store = "file"
        else:
            self.note(f"{where}: not a store walrep has; the default (db) applies")
            return
        self.put("state_persistence.store", store)
        if simple.startswith("Incremental"):
            self.note(f"{where}: store {store}; walrep writes full snapshots, not increments")

    def datasources(self) -> None:
        found = _lookup(self.seed, "wso2.datasources.dataSources")
        if found is None:
            found = []
        if not isinstance(found, list):
            raise ConfigError(f"{self.source}: wso2.datasources.dataSources must be a list")
        out: list[dict[str, Any]] = []
        for index, entry in enumerate(found):
            if not isinstance(entry, Mapping):
                raise ConfigError(
                    f"{self.source}: wso2.datasources.dataSources[{index}] must be a mapping"
                )
            converted = self.datasource(entry, index)
            if converted is not None:
                out.append(converted)
        cluster_ds = self.config.get("cluster", {}).get("datasource")
        names = [d["name"] for d in out]
        if cluster_ds is None:
            if not out:
                return  # walrep's default datasource (a SQLite file) applies
            raise ConfigError(
                f"{self.source}: cluster.config.strategyConfig.datasource is missing: "
                f"name one of {names}"
            )
        if cluster_ds not in names:
            known = any(isinstance(e, Mapping) and str(e.get("name")) == cluster_ds for e in found)
            why = "could not be imported (see the notes)" if known else "is not defined"
            raise ConfigError(
                f"{self.source}: cluster.config.strategyConfig.datasource names {cluster_ds!r}, "
                f"which {why} in wso2.datasources.dataSources"
            )
        self.config["datasources"] = out

    def datasource(self, entry: Mapping[str, Any], index: int) -> dict[str, Any] | None:
        if not entry.get("name"):
            raise ConfigError(f"{self.source}: wso2.datasources.dataSources[{index}] has no name")
        name = str(entry["name"])
        section = "wso2.datasources.dataSources"
        base = f"{section}[{name}]"
        keys = {k.removeprefix("."): v for k, v in _flatten(entry, "").items()}
        keys.pop("name")
        kind = keys.pop("definition.type", "RDBMS")
        if str(kind).upper() != "RDBMS":
            self.note(f"{base}: definition.type {kind} is not a database; not imported")
            return None
        conf = "definition.configuration"
        jdbc = keys.pop(f"{conf}.jdbcUrl", None) or keys.pop(f"{conf}.url", None)
        username = keys.pop(f"{conf}.username", None)
        password = keys.pop(f"{conf}.password", None)
        if not jdbc:
            self.note(f"{base}: no {conf}.jdbcUrl; not imported")
            return None
        converted = self.url(str(jdbc), name)
        if converted is None:
            return None
        url, url_user, url_password = converted
        result: dict[str, Any] = {"name": name, "url": url}
        if url.startswith("sqlite"):
            for key, value in (("username", username), ("password", password)):
                if value not in (None, ""):
                    reason = "not used by SQLite (no users); not imported"
                    self.ignore(section, f"{conf}.{key}", None, reason, item=name)
            username = password = None
        username = username or url_user
        if username:
            result["username"] = str(username)
        password = password or url_password
        if password not in (None, ""):
            result["password_env"] = self.password_env(str(password), name)
        pool = keys.pop(f"{conf}.maxPoolSize", None)
        if isinstance(pool, int) and not isinstance(pool, bool):
            result["pool_size"] = min(max(pool, 1), 64)
            if result["pool_size"] != pool:
                self.note(f"{base}.{conf}.maxPoolSize ({pool}): changed to {result['pool_size']}")
        elif pool is not None:
            self.ignore(section, f"{conf}.maxPoolSize", pool, "not a number; ignored", item=name)
        timeout = keys.pop(f"{conf}.connectionTimeout", None)
        if isinstance(timeout, int) and timeout > 0:
            result["connect_timeout_ms"] = timeout
        elif timeout is not None:
            reason = "not a positive number; ignored"
            self.ignore(section, f"{conf}.connectionTimeout", timeout, reason, item=name)
        for key in keys:
            leaf = key.rsplit(".", 1)[-1]
            top = key.split(".", 1)[0]
            why = _DATASOURCE_IGNORED.get(leaf) or _DATASOURCE_IGNORED.get(top)
            self.ignore(section, key, None, why or "no counterpart in walrep; ignored", item=name)
        return result

    def password_env(self, password: str, name: str) -> str:
        where = f"wso2.datasources.dataSources[{name}].definition.configuration.password"
        from_env = _ENV_PLACEHOLDER.match(password)
        if from_env:
            variable = from_env.group(1)
            self.note(f"{where}: read from {variable} (password_env), as the seed's ${{env:}} did")
            return variable
        variable = PASSWORD_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
        what = (
            "a secure-vault alias, which walrep cannot read"
            if _SEC_PLACEHOLDER.match(password)
            else "not written to the output"
        )
        self.note(
            f"{where}: {what}; export {variable}=<the password> before starting the node "
            "(password_env)"
        )
        return variable

    def url(self, jdbc: str, name: str) -> tuple[str, str | None, str | None] | None:
        """``(SQLAlchemy URL without credentials, user, password)`` from a JDBC URL."""
        where = f"wso2.datasources.dataSources[{name}].definition.configuration.jdbcUrl"
        text = jdbc.removeprefix("jdbc:")
        scheme = text.split(":", 1)[0].lower()
        if scheme == "h2":
            path = text.split(";", 1)[0].removeprefix("h2:").replace("\\", "/")
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.rstrip("/").rsplit("/", 1)[-1]) or name
            url = f"sqlite+aiosqlite:///data/{stem}.db"
            self.note(
                f"{where} (H2): H2 is not supported; replaced by the SQLite file {url} "
                "(relative to the directory the node starts in). Two nodes share a SQLite file "
                "only on one host: use MariaDB/MySQL or PostgreSQL across hosts"
            )
            return url, None, None
        if scheme not in _SUPPORTED_JDBC:
            self.note(
                f"{where} ({redact(jdbc)}): {scheme} is not supported (MariaDB/MySQL, "
                "PostgreSQL or SQLite); datasource not imported"
            )
            return None
        try:
            parsed = make_url(text)
        except (ArgumentError, ValueError) as e:
            raise ConfigError(f"{self.source}: {where} is not a database URL: {e}") from e
        query = dict(parsed.query)
        user = parsed.username or _first(query.pop("user", None))
        password = parsed.password or _first(query.pop("password", None))
        for option in sorted(query):
            self.ignore(
                "wso2.datasources.dataSources",
                f"definition.configuration.jdbcUrl?{option}",
                None,
                "a JDBC driver option, not one of walrep's drivers; dropped",
                item=name,
            )
        clean = parsed.set(username=None, password=None, query={})
        url = clean.render_as_string(hide_password=False)
        normalize_url(url)  # raises ConfigError when walrep cannot use it
        return url, user, password

    def other_sections(self) -> None:
        others: list[str] = []
        for key, value in self.seed.items():
            if key in _KNOWN_SECTIONS:
                continue
            nested = [f"{key}.{k}" for k in value] if isinstance(value, Mapping) else []
            if any(n in _KNOWN_SECTIONS for n in nested):
                others.extend(n for n in nested if n not in _KNOWN_SECTIONS)
            else:
                others.append(str(key))
        if others:
            self.note(f"{', '.join(others)}: not part of the HA setup walrep replaces; ignored")

    def run(self) -> SeedImport:
        self.carbon()
        self.cluster()
        self.deployment()
        self.persistence()
        self.datasources()
        self.other_sections()
        try:
            validate_without_env(self.config)
        except ValidationError as e:
            raise ConfigError(
                f"{self.source}: the imported configuration is invalid: {_why(e)}"
            ) from e
        return SeedImport(_ordered(self.config), _render_notes(self.entries))


def _first(value: Any) -> str | None:
    if isinstance(value, tuple):
        return str(value[0]) if value else None
    return None if value is None else str(value)


def _why(error: ValidationError) -> str:
    problems = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"])
        origin = _ORIGINS.get(key)
        where = f"{key} (from seed key {origin})" if origin else key
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def _ordered(config: dict[str, Any]) -> dict[str, Any]:
    order = ["node", "port_offset", "cluster", "deployment", "state_persistence", "datasources"]
    return {k: config[k] for k in order if k in config}


def import_seed(
    seed: Mapping[str, Any], *, node_id: str | None = None, source: str = "seed"
) -> SeedImport:
    """Map a parsed seed ``deployment.yaml`` to a walrep config; ``ConfigError`` if unusable."""
    return _Importer(seed, node_id, source).run()


def render(result: SeedImport, *, source: str) -> str:
    """The config as YAML, headed by the notes as comments."""
    lines = [
        f"# walrep configuration imported from {source} by `walrep config import`.",
        "# Check it with `walrep config check -c FILE`; keys: docs/configuration.md.",
    ]
    if result.notes:
        lines += ["#", "# Notes on the import (seed keys ignored or changed):"]
        for note in result.notes:
            wrapped = textwrap.wrap(note, width=94, break_long_words=False, break_on_hyphens=False)
            lines += [f"#   - {wrapped[0]}"] + [f"#     {line}" for line in wrapped[1:]]
    body = yaml.safe_dump(result.config, sort_keys=False, default_flow_style=False)
    return "\n".join(lines) + "\n\n" + body
