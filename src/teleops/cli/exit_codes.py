"""The `teleops` exit codes (README "Command line"): 0 ok, 1 error, 2 usage, 78 bad configuration (sysexits' EX_CONFIG).

A module of its own so that `teleops agent` can use them without importing the controller's configuration.
"""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78
