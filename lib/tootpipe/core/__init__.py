"""The core every other package stands on: parameters (validated, strict), secrets and their redaction, the paths of
the project, its install and its state, every error a user can act on, the toot record schema, the filters, the
fingerprints that decide reuse, and the names of the sentiment variants the parameters may use. Imports nothing of
tootpipe outside itself."""

__all__ = ["config", "errors", "filters", "fingerprint", "paths", "schema", "variants"]
