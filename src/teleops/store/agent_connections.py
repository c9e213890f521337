"""Which controller replica each agent is connected to (PostgreSQL with several replicas; docs/replicas.md).

The rule: an agent is connected to replica R when its row names R and was refreshed less than `stale_s` ago by
the database's clock. R refreshes all its rows every few seconds (`refresh`); a replica that dies (kill -9, a lost
machine) or freezes stops refreshing, so its agents count as connected nowhere once `stale_s` has passed, even
though no one deleted the rows. The agent reconnecting anywhere overwrites its row (`connected`). Times are the
database's (`now()`), so replicas whose clocks disagree still agree on what is stale.

Every write also queues a wake-up (store/wakeups.py) so the other replicas update their view at once instead of
at their next read.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Float, and_, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from teleops.store.database import Database
from teleops.store.schema import agent_connections
from teleops.store.wakeups import notify

__all__ = ["connected", "disconnected", "refresh"]


def _db_now() -> ColumnElement[object]:
    """The database's clock, as the naive UTC the tables hold."""
    return func.timezone("UTC", func.now())


async def connected(db: Database, agent_name: str, *, replica: str) -> None:
    """`agent_name` is connected to `replica` now (replacing wherever it was before), and the others are told."""

    def apply(conn: Connection) -> None:
        now = _db_now()
        statement = pg_insert(agent_connections).values(
            agent_name=agent_name, replica=replica, connected_at=now, refreshed_at=now
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[agent_connections.c.agent_name],
                set_={"replica": replica, "connected_at": now, "refreshed_at": now},
            )
        )
        notify(conn, {"what": "agent", "agent": agent_name, "replica": replica})

    await db.run_in_transaction(apply)


async def disconnected(db: Database, agent_name: str, *, replica: str) -> None:
    """`agent_name`'s connection to `replica` ended. A newer connection elsewhere (its row names another replica)
    is left alone."""

    def apply(conn: Connection) -> None:
        gone = conn.execute(
            delete(agent_connections).where(
                agent_connections.c.agent_name == agent_name, agent_connections.c.replica == replica
            )
        )
        if gone.rowcount:
            notify(conn, {"what": "agent", "agent": agent_name, "replica": None, "from": replica})

    await db.run_in_transaction(apply)


async def refresh(db: Database, *, replica: str, agents: list[str], stale_s: float) -> Mapping[str, str]:
    """Refresh `replica`'s connections (`agents`: the ones it holds now; its rows of agents it no longer holds are
    removed, missing ones added) and return where every other live connection is: agent name → replica."""

    def apply(conn: Connection) -> dict[str, str]:
        c = agent_connections.c
        now = _db_now()
        conn.execute(update(agent_connections).where(c.replica == replica).values(refreshed_at=now))
        conn.execute(delete(agent_connections).where(c.replica == replica, c.agent_name.not_in(agents)))
        if agents:  # a connection whose `connected` write failed; an agent whose row names another replica has
            # reconnected there since (an agent keeps one connection), so that row is left as it is
            missing = [{"agent_name": a, "replica": replica, "connected_at": now, "refreshed_at": now} for a in agents]
            conn.execute(pg_insert(agent_connections).values(missing).on_conflict_do_nothing())
        fresh = c.refreshed_at > now - func.make_interval(0, 0, 0, 0, 0, 0, literal(float(stale_s), Float()))
        rows = conn.execute(select(c.agent_name, c.replica).where(and_(c.replica != replica, fresh))).all()
        return {row.agent_name: row.replica for row in rows}

    return await db.run_in_transaction(apply)
