"""Configuration: the models and loading (``model``) and the WSO2 seed import (``seed``).

The package depends on nothing of walrep but its errors and the lease's timing type;
``walrep.node.settings`` maps a loaded ``WalrepConfig`` onto the settings of the cores.
"""

from walrep.config.model import (
    DEFAULT_DATASOURCE,
    AppendSection,
    ClusterSection,
    DatasourceSection,
    DeploymentSection,
    EventSyncClientSection,
    EventSyncServerSection,
    LogSection,
    NodeSection,
    ReplicationSection,
    StatePersistenceSection,
    TlsSection,
    WalrepConfig,
    describe_errors,
    load_config,
)

__all__ = [
    "DEFAULT_DATASOURCE",
    "AppendSection",
    "ClusterSection",
    "DatasourceSection",
    "DeploymentSection",
    "EventSyncClientSection",
    "EventSyncServerSection",
    "LogSection",
    "NodeSection",
    "ReplicationSection",
    "StatePersistenceSection",
    "TlsSection",
    "WalrepConfig",
    "describe_errors",
    "load_config",
]
