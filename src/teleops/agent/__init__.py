"""The agent process: its connection to the controller, the host's own policy, spawning, cgroups and rlimits,
output spooling and orphans (docs/architecture.md, "Packages: `src/teleops/`")."""
