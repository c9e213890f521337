"""scenario memory: full-text search over scenarios (SQLite FTS5, PostgreSQL tsvector + GIN), kept by triggers

One search row per piece of a scenario: the incident (name, host, summary), each note, each finished command
(argv and output). Triggers write them, so every code path that stores those rows feeds the index without
knowing about it. Existing rows are indexed here once.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# A command leaving ('queued', 'running', 'lost') has its final output: that is when it is indexed.

_SQLITE = [
    "CREATE VIRTUAL TABLE scenario_search USING fts5(body, incident_id UNINDEXED, kind UNINDEXED, "
    "tokenize = 'unicode61 remove_diacritics 2')",
    """CREATE TRIGGER scenario_search_incident AFTER INSERT ON incidents BEGIN
        INSERT INTO scenario_search (body, incident_id, kind)
        VALUES (new.name || ' ' || coalesce(new.host, '') || ' ' || new.summary, new.id, 'incident');
    END""",
    """CREATE TRIGGER scenario_search_note AFTER INSERT ON timeline_events WHEN new.kind = 'note' BEGIN
        INSERT INTO scenario_search (body, incident_id, kind)
        VALUES (coalesce(json_extract(new.data, '$.text'), ''), new.incident_id, 'note');
    END""",
    """CREATE TRIGGER scenario_search_command AFTER UPDATE OF status ON commands
    WHEN new.incident_id IS NOT NULL AND old.status IN ('queued', 'running', 'lost')
        AND new.status NOT IN ('queued', 'running', 'lost') BEGIN
        INSERT INTO scenario_search (body, incident_id, kind)
        VALUES ((SELECT coalesce(group_concat(value, ' '), '') FROM json_each(new.argv)) || ' ' || new.output,
                new.incident_id, 'command');
    END""",
    "INSERT INTO scenario_search (body, incident_id, kind) "
    "SELECT name || ' ' || coalesce(host, '') || ' ' || summary, id, 'incident' FROM incidents",
    "INSERT INTO scenario_search (body, incident_id, kind) "
    "SELECT coalesce(json_extract(data, '$.text'), ''), incident_id, 'note' FROM timeline_events WHERE kind = 'note'",
    "INSERT INTO scenario_search (body, incident_id, kind) "
    "SELECT (SELECT coalesce(group_concat(value, ' '), '') FROM json_each(c.argv)) || ' ' || c.output, "
    "c.incident_id, 'command' FROM commands c "
    "WHERE c.incident_id IS NOT NULL AND c.status NOT IN ('queued', 'running', 'lost')",
]

_POSTGRES = [
    """CREATE TABLE scenario_search (
        id BIGSERIAL PRIMARY KEY,
        incident_id BIGINT NOT NULL REFERENCES incidents (id),
        kind VARCHAR(16) NOT NULL,
        body TEXT NOT NULL,
        tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED
    )""",
    "CREATE INDEX ix_scenario_search_tsv ON scenario_search USING gin (tsv)",
    "CREATE INDEX ix_scenario_search_incident_id ON scenario_search (incident_id)",
    """CREATE FUNCTION scenario_search_incident() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO scenario_search (incident_id, kind, body)
        VALUES (NEW.id, 'incident', NEW.name || ' ' || coalesce(NEW.host, '') || ' ' || NEW.summary);
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER scenario_search_incident AFTER INSERT ON incidents "
    "FOR EACH ROW EXECUTE FUNCTION scenario_search_incident()",
    """CREATE FUNCTION scenario_search_note() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO scenario_search (incident_id, kind, body)
        VALUES (NEW.incident_id, 'note', coalesce(NEW.data ->> 'text', ''));
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER scenario_search_note AFTER INSERT ON timeline_events "
    "FOR EACH ROW WHEN (NEW.kind = 'note') EXECUTE FUNCTION scenario_search_note()",
    """CREATE FUNCTION scenario_search_command() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO scenario_search (incident_id, kind, body)
        VALUES (NEW.incident_id, 'command',
                coalesce((SELECT string_agg(value, ' ') FROM json_array_elements_text(NEW.argv::json)), '')
                || ' ' || NEW.output);
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER scenario_search_command AFTER UPDATE OF status ON commands FOR EACH ROW "
    "WHEN (NEW.incident_id IS NOT NULL AND OLD.status IN ('queued', 'running', 'lost') "
    "AND NEW.status NOT IN ('queued', 'running', 'lost')) "
    "EXECUTE FUNCTION scenario_search_command()",
    "INSERT INTO scenario_search (incident_id, kind, body) "
    "SELECT id, 'incident', name || ' ' || coalesce(host, '') || ' ' || summary FROM incidents",
    "INSERT INTO scenario_search (incident_id, kind, body) "
    "SELECT incident_id, 'note', coalesce(data::json ->> 'text', '') FROM timeline_events WHERE kind = 'note'",
    "INSERT INTO scenario_search (incident_id, kind, body) "
    "SELECT c.incident_id, 'command', "
    "coalesce((SELECT string_agg(value, ' ') FROM json_array_elements_text(c.argv::json)), '') || ' ' || c.output "
    "FROM commands c WHERE c.incident_id IS NOT NULL AND c.status NOT IN ('queued', 'running', 'lost')",
]


def upgrade() -> None:
    op.create_index("ix_incidents_name_id", "incidents", ["name", "id"])
    op.create_index("ix_incidents_name_host_id", "incidents", ["name", "host", "id"])
    statements = _SQLITE if op.get_bind().dialect.name == "sqlite" else _POSTGRES
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    op.drop_index("ix_incidents_name_host_id", table_name="incidents")
    op.drop_index("ix_incidents_name_id", table_name="incidents")
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("scenario_search_command", "scenario_search_note", "scenario_search_incident"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS scenario_search")
        return
    for name, table in (
        ("scenario_search_command", "commands"),
        ("scenario_search_note", "timeline_events"),
        ("scenario_search_incident", "incidents"),
    ):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.execute("DROP TABLE IF EXISTS scenario_search")
