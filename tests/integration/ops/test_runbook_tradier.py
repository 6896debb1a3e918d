"""The runbook's Tradier check, run verbatim by bash (curl) against the Tradier sim: 200 while the venue
answers, the fault's status during an outage, 401 for a token the venue does not know."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from services.sim import SimServer
from services.sim.tradier import TradierSim

pytestmark = pytest.mark.integration

TOKEN = "tk-SENTINEL-runbook-77aa"
ACCOUNT = "VA7654321"
VENUE_CHECK = ("curl -sS -o /dev/null -w '%{http_code}\\n' -H \"Authorization: Bearer $TRADIER_ACCESS_TOKEN\" "
               "-H \"Accept: application/json\" \"$TRADIER_BASE_URL/accounts/$TRADIER_ACCOUNT_ID/positions\"")
COMMANDS = (VENUE_CHECK,)


@pytest.fixture
def venue() -> Iterator[SimServer]:
    server = SimServer(TradierSim(TOKEN, ACCOUNT).app()).start()
    yield server
    server.stop()


def check(server: SimServer, token: str = TOKEN) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADIER_")}
    env.update(TRADIER_ACCESS_TOKEN=token, TRADIER_ACCOUNT_ID=ACCOUNT, TRADIER_BASE_URL=f"{server.url}/v1")
    proc = subprocess.run(["bash", "-c", VENUE_CHECK], env=env, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout


def test_the_check_tells_an_answering_venue_from_an_outage_and_a_bad_token(venue: SimServer) -> None:
    assert check(venue) == "200\n"
    fault = {"endpoint": "positions", "status": 503, "times": 2}
    assert httpx.post(f"{venue.url}/sim/faults", json=fault).status_code == 200
    assert [check(venue), check(venue)] == ["503\n", "503\n"]
    assert check(venue) == "200\n", "the venue is back once the outage is over"
    assert check(venue, token="tk-old-rotated-away") == "401\n"
