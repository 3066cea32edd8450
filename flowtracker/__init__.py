"""flowtracker: a durable state machine per Scrive flow instance and document, fed by callbacks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flowtracker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
