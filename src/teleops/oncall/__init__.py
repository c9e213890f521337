"""Who is paged and when: rotations and overrides, routing to teams, the escalation state machine and worker,
pages as deliveries, handover, silences and calendar feeds (docs/architecture.md, "Packages: `src/teleops/`")."""
