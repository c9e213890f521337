"""The front door's rows for heartbeat pings (server/front_door.py): an ingest token, a small body, and only the
`…/{name}/ping` paths; the other heartbeat routes stay behind the API door."""

from __future__ import annotations

import pytest

from teleops.server.front_door import Credential, door_for

KiB = 1024


@pytest.mark.parametrize(
    ("path", "credential"),
    [
        ("/api/v1/heartbeats/nightly-backup/ping", Credential.HEARTBEAT_PING),
        ("/v2/heartbeats/nightly-backup/ping", Credential.HEARTBEAT_PING),
        ("/api/v1/heartbeats/ping", Credential.API),  # reading the heartbeat named "ping" needs an API token
        ("/api/v1/heartbeats/nightly-backup", Credential.API),
        ("/api/v1/heartbeats", Credential.API),
    ],
)
def test_heartbeat_paths_have_the_right_door(path: str, credential: Credential) -> None:
    door = door_for(path)
    assert door is not None
    assert door.credential is credential


def test_a_ping_body_is_capped_small_and_other_v2_paths_are_not_served() -> None:
    door = door_for("/api/v1/heartbeats/job/ping")
    assert door is not None
    assert door.body_cap == 64 * KiB
    assert door_for("/v2/heartbeats/ping") is None
    assert door_for("/v2/alerts") is None
