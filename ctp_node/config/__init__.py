"""The node's configuration: the YAML schema, its defaults, loading and validation errors.

``config/ctp-node.yaml`` is the reference: every key with its default and a comment. This
module turns such a file into a frozen :class:`Config` in one step — either every value is
valid and the whole configuration is returned, or :class:`ConfigError` lists every problem
with its key path (``destinations.0.port``) and nothing is applied.

Relative paths (``storage.root``, the file inside a ``sqlite:///relative.db`` URL and the TLS
PEM files) are relative to the configuration file's folder (``config check`` warns about them
outside a checkout). The reference ships in the package (:mod:`ctp_node.config.reference`).
Durations are seconds (``_s``), sizes bytes.
"""

from ctp_node.config.destinations import (
    OUTPUT_KINDS,
    DestinationConfig,
    DestinationTLSConfig,
    OutputKind,
    SendConfig,
)
from ctp_node.config.loading import (
    check_config,
    config_warnings,
    default_config_path,
    load_config,
    resolve_sqlite_url,
)
from ctp_node.config.node import AllowedCaller, ListenerTLSConfig, NodeConfig
from ctp_node.config.notifications import EmailConfig, NotificationsConfig, WebhookConfig
from ctp_node.config.problems import ConfigError, ConfigProblem
from ctp_node.config.reference import reference_config_text, relative_path_warnings
from ctp_node.config.schema import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    FILE_KEY_PATH,
    Config,
    DatabaseConfig,
    IngestConfig,
    PerfusionConfig,
    ReportConfig,
    RetentionConfig,
    StorageConfig,
    WorkerConfig,
)
from ctp_node.config.secrets import bearer_token, database_password, notification_secrets

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_PATH",
    "FILE_KEY_PATH",
    "OUTPUT_KINDS",
    "AllowedCaller",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DatabaseConfig",
    "DestinationConfig",
    "DestinationTLSConfig",
    "EmailConfig",
    "IngestConfig",
    "ListenerTLSConfig",
    "NodeConfig",
    "NotificationsConfig",
    "OutputKind",
    "PerfusionConfig",
    "ReportConfig",
    "RetentionConfig",
    "SendConfig",
    "StorageConfig",
    "WebhookConfig",
    "WorkerConfig",
    "bearer_token",
    "check_config",
    "config_warnings",
    "database_password",
    "default_config_path",
    "load_config",
    "notification_secrets",
    "reference_config_text",
    "relative_path_warnings",
    "resolve_sqlite_url",
]
