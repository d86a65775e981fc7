"""tagstream: real-time music tagging with the 50 Million Song Dataset tags.

This package holds the process edge every command shares: one exit-status
enum and one root exception (:mod:`tagstream.errors`), one command runner that
parses arguments, loads settings, sets up logging, turns SIGINT/SIGTERM into an
event and turns errors into one line and an exit status (:mod:`tagstream.cli`),
and the ``tagstream`` command that reaches every other command
(``python -m tagstream``).
"""

from tagstream.errors import ExitStatus, TagstreamError

__all__ = ["ExitStatus", "TagstreamError", "__version__"]

__version__ = "0.2.0"
