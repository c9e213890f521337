"""Full-text search over scenarios: SQLite FTS5 (bm25) or PostgreSQL tsvector (ts_rank), ranked and paged.

The `scenario_search` rows are written by triggers (migration 0006). The query is reduced to its words before
it reaches the database, so no FTS5 or tsquery syntax from a person ever gets interpreted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection

from teleops.store.database import Database

__all__ = ["MAX_QUERY_WORDS", "SearchHit", "query_words", "search_scenarios"]

MAX_QUERY_WORDS = 12
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class SearchHit:
    incident_id: int
    score: float  # higher is better, comparable only within one search
    name: str
    host: str | None
    status: str
    summary: str
    created_at: datetime
    snippet: str


def query_words(query: str) -> list[str]:
    """The words of a query (letters, digits, underscore), lower-cased, at most MAX_QUERY_WORDS."""
    return [w.lower() for w in _WORD.findall(query)][:MAX_QUERY_WORDS]


_SQLITE = text(
    """
    SELECT m.incident_id AS incident_id, m.score AS score, i.name AS name, i.host AS host, i.status AS status,
           i.summary AS summary, i.created_at AS created_at, m.snippet AS snippet
    FROM (
        SELECT incident_id, -min(rank) AS score,
               (SELECT snippet(scenario_search, 0, '', '', '…', 12) FROM scenario_search
                WHERE scenario_search MATCH :q AND incident_id = hits.incident_id
                      AND (:commands OR kind <> 'command')
                ORDER BY rank LIMIT 1)
               AS snippet
        FROM (SELECT CAST(incident_id AS INTEGER) AS incident_id, rank FROM scenario_search
              WHERE scenario_search MATCH :q AND (:commands OR kind <> 'command')) AS hits
        GROUP BY incident_id
    ) AS m JOIN incidents AS i ON i.id = m.incident_id
    ORDER BY m.score DESC, m.incident_id DESC
    LIMIT :limit OFFSET :offset
    """
)

_POSTGRES = text(
    """
    SELECT m.incident_id AS incident_id, m.score AS score, i.name AS name, i.host AS host, i.status AS status,
           i.summary AS summary, i.created_at AS created_at,
           (SELECT ts_headline('simple', s2.body, plainto_tsquery('simple', :q),
                               'MaxWords=12, MinWords=3, StartSel="", StopSel=""')
            FROM scenario_search AS s2
            WHERE s2.incident_id = m.incident_id AND s2.tsv @@ plainto_tsquery('simple', :q)
                  AND (:commands OR s2.kind <> 'command')
            ORDER BY ts_rank(s2.tsv, plainto_tsquery('simple', :q)) DESC LIMIT 1) AS snippet
    FROM (
        SELECT incident_id, max(ts_rank(tsv, plainto_tsquery('simple', :q))) AS score
        FROM scenario_search WHERE tsv @@ plainto_tsquery('simple', :q) AND (:commands OR kind <> 'command')
        GROUP BY incident_id
    ) AS m JOIN incidents AS i ON i.id = m.incident_id
    ORDER BY m.score DESC, m.incident_id DESC
    LIMIT :limit OFFSET :offset
    """
)


def _search(conn: Connection, words: list[str], limit: int, offset: int, commands: bool) -> list[SearchHit]:
    if conn.dialect.name == "sqlite":
        # Each word as an FTS5 string ("..."), implicitly ANDed: no operator from the query is ever parsed.
        query = " ".join(f'"{w}"' for w in words)
        rows = conn.execute(_SQLITE, {"q": query, "limit": limit, "offset": offset, "commands": commands})
    else:
        rows = conn.execute(_POSTGRES, {"q": " ".join(words), "limit": limit, "offset": offset, "commands": commands})
    hits = []
    for r in rows:
        created = r.created_at if isinstance(r.created_at, datetime) else datetime.fromisoformat(str(r.created_at))
        created = created.replace(tzinfo=UTC) if created.tzinfo is None else created.astimezone(UTC)
        hits.append(
            SearchHit(
                incident_id=int(r.incident_id),
                score=float(r.score),
                name=r.name,
                host=r.host,
                status=r.status,
                summary=r.summary,
                created_at=created,
                snippet=str(r.snippet or ""),
            )
        )
    return hits


async def search_scenarios(
    db: Database, query: str, *, limit: int = 20, offset: int = 0, commands: bool = True
) -> list[SearchHit]:
    """Scenarios matching every word of `query`, best first (then newest). An empty query finds nothing.
    `commands=False` searches incidents and notes only, never a command line or output (for a reader who may not
    read every command: commands/read_access.py).

    Raises StorageUnavailable when the database does not answer.
    """
    words = query_words(query)
    if not words:
        return []
    return await db.run_in_transaction(_search, words, limit, offset, commands)
