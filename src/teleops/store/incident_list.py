"""The incident list for people: filtered in SQL by status, severity, source, host, team and scenario text.

The web UI's incident list (server/routes/ui_incident_list.py) uses it. Every condition is a WHERE clause, so a
filter costs one query however many incidents there are; the counts per status come from a second, grouped query
over the same conditions without the status one (so the list can say "open 3 · acknowledged 1 · resolved 10"
whichever status is shown). Text goes through the scenario search index (store/search.py): its words only, never
FTS5 or tsquery syntax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Integer, and_, column, func, select, text, true
from sqlalchemy.engine import Connection
from sqlalchemy.sql.selectable import TextualSelect

from teleops.domain.incident import IncidentRecord, IncidentStatus
from teleops.store.database import Database
from teleops.store.schema import escalations, incidents
from teleops.store.search import query_words

__all__ = ["MAX_LIST", "IncidentList", "IncidentQuery", "query_incidents"]

MAX_LIST = 500  # the most rows one query returns, whatever `limit` asks


@dataclass(frozen=True, slots=True)
class IncidentQuery:
    """What to list. Empty fields match everything."""

    statuses: tuple[IncidentStatus, ...] = ()  # any of these; () is every status
    severity: str = ""  # exact
    source: str = ""  # exact
    host: str = ""  # exact, case-insensitive; `*` matches any run of characters ("web-*")
    teams: tuple[str, ...] | None = None  # incidents escalating to one of these teams; None: any, (): none
    text: str = ""  # every word must occur in the scenario (name, host, summary, notes, and commands if allowed)
    search_commands: bool = True  # False: text never looks into command lines or output (commands/read_access.py)
    limit: int = 200


@dataclass(frozen=True, slots=True)
class IncidentList:
    incidents: Sequence[IncidentRecord]  # newest first, at most `limit`
    matching: int  # how many match every condition (may be more than are listed)
    by_status: dict[str, int]  # per status, matching every condition except the status one; every status present


_COLUMNS = [c for c in incidents.c if c.name != "digest"]

_SQLITE_TEXT = (
    "SELECT CAST(incident_id AS INTEGER) AS incident_id FROM scenario_search "
    "WHERE scenario_search MATCH :q AND (:commands OR kind <> 'command')"
)
_POSTGRES_TEXT = (
    "SELECT incident_id FROM scenario_search "
    "WHERE tsv @@ plainto_tsquery('simple', :q) AND (:commands OR kind <> 'command')"
)


def _like(pattern: str) -> str:
    """A host pattern as a LIKE pattern: `*` is any run of characters; `%`, `_` and `\\` are literal."""
    escaped = pattern.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _text_matches(dialect: str, words: list[str], commands: bool) -> TextualSelect:
    """The ids of incidents whose scenario holds every word (the search index of migration 0006)."""
    if dialect == "sqlite":
        # Each word as an FTS5 string, implicitly ANDed: nothing a person typed is parsed as an operator.
        statement = text(_SQLITE_TEXT).bindparams(q=" ".join(f'"{w}"' for w in words), commands=commands)
    else:
        statement = text(_POSTGRES_TEXT).bindparams(q=" ".join(words), commands=commands)
    return statement.columns(column("incident_id", Integer))


def _conditions(query: IncidentQuery, dialect: str) -> list[ColumnElement[bool]]:
    """Every condition but the status one."""
    where: list[ColumnElement[bool]] = []
    if query.severity:
        where.append(incidents.c.severity == query.severity)
    if query.source:
        where.append(incidents.c.source == query.source)
    if query.host:
        host = func.lower(incidents.c.host)
        if "*" in query.host:
            where.append(host.like(_like(query.host), escape="\\"))
        else:
            where.append(host == query.host.lower())
    if query.teams is not None:
        teams = select(escalations.c.incident_id).where(escalations.c.team.in_(query.teams))
        where.append(incidents.c.id.in_(teams))
    words = query_words(query.text)
    if words:
        where.append(incidents.c.id.in_(_text_matches(dialect, words, query.search_commands)))
    return where


async def query_incidents(db: Database, query: IncidentQuery) -> IncidentList:
    """The newest incidents matching `query`, how many match in all, and the counts per status.

    Text with no words in it (only punctuation) filters nothing: callers check `query_words` first to say so.
    Raises StorageUnavailable when the database does not answer.
    """
    limit = max(1, min(query.limit, MAX_LIST))

    def read(conn: Connection) -> IncidentList:
        where = _conditions(query, conn.dialect.name)
        counted = conn.execute(
            select(incidents.c.status, func.count()).where(and_(true(), *where)).group_by(incidents.c.status)
        ).all()
        by_status = {status.value: 0 for status in IncidentStatus}
        by_status.update({str(status): int(n) for status, n in counted})
        wanted = [s.value for s in query.statuses]
        if wanted:
            where.append(incidents.c.status.in_(wanted))
        matching = sum(n for status, n in by_status.items() if not wanted or status in wanted)
        rows = conn.execute(
            select(*_COLUMNS).where(and_(true(), *where)).order_by(incidents.c.id.desc()).limit(limit)
        ).all()
        return IncidentList([IncidentRecord(**row._mapping) for row in rows], matching, by_status)

    return await db.read(read)
