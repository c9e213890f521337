"""Scenario memory: "last time", recurrence, run again, runbooks, first response and postmortem export
(docs/architecture.md, "Packages: `src/teleops/`")."""
