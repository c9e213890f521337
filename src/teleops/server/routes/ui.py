"""The web UI under /ui/: login, incidents, one incident's scenario, the console chat, commands, the fleet, on
call, 2FA enrolment, and (admins) audit, people and tokens."""

from __future__ import annotations

from fastapi import APIRouter

from teleops.server.routes import (
    ui_account,
    ui_audit,
    ui_commands,
    ui_console,
    ui_fleet,
    ui_incident_list,
    ui_incidents,
    ui_login,
    ui_oncall,
    ui_people,
    ui_person,
    ui_run_again,
    ui_tokens,
)

__all__ = ["router"]

router = APIRouter(prefix="/ui", include_in_schema=False)
router.include_router(ui_login.router)
# Before ui_incidents: its /incidents/{incident_id} would otherwise answer /incidents/rows (with a 422).
router.include_router(ui_incident_list.router)
router.include_router(ui_incidents.router)
router.include_router(ui_console.router)
router.include_router(ui_account.router)
router.include_router(ui_audit.router)
router.include_router(ui_oncall.router)
# People and tokens (admins only).
router.include_router(ui_people.router)
router.include_router(ui_person.router)
router.include_router(ui_tokens.router)
# Commands from the web UI, their history and the fleet.
router.include_router(ui_commands.router)
router.include_router(ui_run_again.router)
router.include_router(ui_fleet.router)
