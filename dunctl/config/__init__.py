"""Configuration: `dunctl.yaml`, the sequences it points at, and their templates, validated strictly on load.

    schema.py   the pydantic models of dunctl.yaml and of a sequence file, and `Config`, what loading returns
    yaml.py     safe YAML: size cap, one document, no duplicate keys, bounded aliases and nesting, line numbers
    load.py     `load_config`: read the files, validate them, turn pydantic's errors into problems
    checks.py   what the schema cannot see: inside a sequence, and across the config, sequences and templates

The `notices:` and `experiments:` sections are defined next to what uses them (dunctl/notices/config.py,
dunctl/experiments.py) on the same strict base (dunctl/strict.py). Import from here: these names are the
package's surface.
"""

from dunctl.config.checks import known_templates
from dunctl.config.load import load_config
from dunctl.config.schema import (
    ACTIONS,
    CUSTOMER,
    CUSTOMER_FACING,
    DEFAULT_TIMEOUT,
    INTERNAL,
    IRREVERSIBLE,
    MAX_OFFSET,
    MAX_OFFSET_BUSINESS_DAYS,
    MAX_STEP_ID,
    NETWORK_ATTEMPT_LIMIT,
    RECIPIENTS,
    SUSPENDING,
    TIMEOUT_LIMIT,
    ChannelContact,
    Channels,
    Config,
    ConfigFile,
    ContactConfig,
    DirConfig,
    DunningConfig,
    EmailChannel,
    EscalationConfig,
    FxConfig,
    LedgerConfig,
    LogConfig,
    OnRecovery,
    ReportConfig,
    Segment,
    SenderConfig,
    Sequence,
    SlackChannel,
    SmsChannel,
    Step,
    StripeConfig,
    WebhookChannel,
    quiet_window,
    sequence_definition,
    sequence_hash,
)
from dunctl.config.yaml import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_VALUES
from dunctl.strict import Strict, format_path

__all__ = [
    "ACTIONS", "CUSTOMER", "CUSTOMER_FACING", "DEFAULT_TIMEOUT", "INTERNAL", "IRREVERSIBLE", "MAX_OFFSET",
    "MAX_OFFSET_BUSINESS_DAYS", "MAX_STEP_ID", "MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_VALUES",
    "NETWORK_ATTEMPT_LIMIT", "RECIPIENTS", "SUSPENDING", "TIMEOUT_LIMIT",
    "ChannelContact", "Channels", "Config", "ConfigFile", "ContactConfig", "DirConfig", "DunningConfig",
    "EmailChannel", "EscalationConfig", "FxConfig", "LedgerConfig", "LogConfig", "OnRecovery", "ReportConfig",
    "Segment", "SenderConfig", "Sequence", "SlackChannel", "SmsChannel", "Step", "Strict", "StripeConfig",
    "WebhookChannel",
    "format_path", "known_templates", "load_config", "quiet_window", "sequence_definition", "sequence_hash",
]
