"""Self-monitoring (issue #20.4): a scheduled end-to-end self-test and an external dead-man's-switch pinger.

health.py decides, self_test.py tests, pinger.py pings, watch.py schedules both; docs/self-monitoring.md.
"""

from teleops.server.selfwatch.watch import SelfWatch

__all__ = ["SelfWatch"]
