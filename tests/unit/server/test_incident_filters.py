"""The incident list's filters: checked with a reason and what to do, kept in links, turned into the store query."""

from __future__ import annotations

from datetime import timedelta

from teleops.domain.incident import IncidentStatus
from teleops.oncall.escalation import Step
from teleops.server.incident_filters import ListFilters, teams_paging

POLICIES = {
    "default": ((Step(timedelta(0), "rotation:primary"), Step(timedelta(minutes=10), "user:carol")), 0),
    "database": ((Step(timedelta(0), "rotation:db"),), 0),
    "storage": ((Step(timedelta(0), "user:erin"), Step(timedelta(minutes=5), "rotation:db")), 1),
}


def test_a_rotation_means_every_team_whose_escalation_pages_it() -> None:
    assert teams_paging("db", POLICIES) == ("database", "storage")
    assert teams_paging("primary", POLICIES) == ("default",)
    assert teams_paging("nobody", POLICIES) == ()


def test_filters_read_from_the_url_are_stripped_and_unknown_parameters_ignored() -> None:
    filters = ListFilters.from_params({"severity": " critical ", "host": "web-*", "page": "2"})
    assert filters == ListFilters(severity="critical", host="web-*")
    assert filters.active
    assert not ListFilters().active


def test_links_keep_the_other_filters_and_leave_empty_ones_out() -> None:
    filters = ListFilters(status="open", host="web-1", q="disk full")
    assert filters.link(status="resolved") == "/ui/?status=resolved&host=web-1&q=disk+full"
    assert filters.link(status="") == "/ui/?host=web-1&q=disk+full"
    assert ListFilters().link() == "/ui/"


def test_each_bad_filter_is_named_with_the_values_to_choose_from() -> None:
    assert ListFilters(status="closed").problems([]) == [
        "There is no status 'closed'; choose one of: unresolved, open, acknowledged, snoozed, resolved."
    ]
    assert "choose one of: critical, error, warning, info, unknown" in ListFilters(severity="p9").problems([])[0]
    assert "choose one of: alertmanager" in ListFilters(source="nagios").problems([])[0]
    assert ListFilters(rotation="night").problems(["primary", "db"]) == [
        "There is no rotation 'night' (the rotations are: db, primary, under oncall.rotations)."
    ]
    assert "none is configured" in ListFilters(rotation="night").problems([])[0]
    assert "no letters or digits" in ListFilters(q="%%%").problems([])[0]
    assert "longer than 255" in ListFilters(host="h" * 256).problems([])[0]
    assert (
        ListFilters(status="unresolved", severity="info", source="generic", rotation="db", q="x").problems(["db"]) == []
    )


def test_the_store_query_spells_out_statuses_and_teams() -> None:
    query = ListFilters(status="unresolved", rotation="db", q="disk").store_query(
        policies=POLICIES, search_commands=False, limit=20
    )
    assert query.statuses == (IncidentStatus.OPEN, IncidentStatus.ACKNOWLEDGED, IncidentStatus.SNOOZED)
    assert query.teams == ("database", "storage")
    assert (query.text, query.search_commands, query.limit) == ("disk", False, 20)
    plain = ListFilters(status="resolved").store_query(policies=POLICIES, search_commands=True, limit=5)
    assert plain.statuses == (IncidentStatus.RESOLVED,)
    assert plain.teams is None, "no rotation filter: every incident, with or without an escalation"
