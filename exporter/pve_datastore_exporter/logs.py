"""Logging for every command: one stderr handler, every configured secret masked."""

from __future__ import annotations

import logging

from . import config as configuration
from .config import Config


class SecretFilter(logging.Filter):
    """Replaces every configured secret in a log record's text: they never reach a log line."""

    def __init__(self, secrets: tuple[str, ...]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the message and any traceback with the secrets masked."""
        record.msg, record.args = configuration.scrub(record.getMessage(), self.secrets), None
        if record.exc_info:
            record.exc_text = configuration.scrub(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        return True


def setup_logging(config: Config) -> None:
    """One stderr handler (journald adds time), secrets scrubbed."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(config.secrets()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)
