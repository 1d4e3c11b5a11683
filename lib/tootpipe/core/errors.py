"""Every error a user can act on, in one place: each message says what is wrong and what to do.

The modules that raise them import them from here (and keep their names, so ``from tootpipe.kafka.admin import
KafkaUnavailable`` works too).
"""
from __future__ import annotations

__all__ = ["ParamsError", "ServiceError", "JarsMissing", "JavaMissing", "KafkaUnavailable", "DatabaseUnavailable",
           "BadPayload", "RecordTooLarge", "SourceError", "CheckpointMismatch", "NotebookFailed",
           "WriterBusy"]


class ParamsError(ValueError):
    """A parameter file that cannot be used; the message names the key."""


class ServiceError(RuntimeError):
    """A service could not be started, reached or stopped; the message says what to do."""


class JarsMissing(RuntimeError):
    """The JVM jars are not there and could not be fetched; the message says why and what to do."""


class JavaMissing(RuntimeError):
    """Spark needs Java 17 or newer."""


class KafkaUnavailable(RuntimeError):
    """The broker cannot be reached or refused a request; the message names the address."""


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached; the message names the address (without credentials)."""


class BadPayload(ValueError):
    """A payload that cannot become a record; the message is the reason."""


class RecordTooLarge(BadPayload):
    """A record over the producer's size limit: a bad payload, dead-lettered by the caller."""


class SourceError(RuntimeError):
    """A source that cannot run as configured; the message says what to change."""


class CheckpointMismatch(RuntimeError):
    """A checkpoint written for another Kafka cluster or topic; the message says how to go on."""


class NotebookFailed(RuntimeError):
    """A notebook of a run failed: which one, in which cell, with which error."""

    def __init__(self, notebook: str, cell: int | None, error: str):
        super().__init__(f"{notebook} failed in cell {cell}: {error}")
        self.notebook, self.cell, self.error = notebook, cell, error


class WriterBusy(RuntimeError):
    """Another process holds the writer lock of this kind (the message names it); nothing was written."""
