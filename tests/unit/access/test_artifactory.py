"""Whether a user may pull, asked of a stand-in Artifactory with the user's own credential through the route that
serves the name: each answer's verdict, and the credential sent to the route's origin only."""
import base64

import pytest
from aiohttp import web

from registry_mirror.access.artifactory import ArtifactoryCheck
from registry_mirror.config.load import parse
from registry_mirror.routes.routing import Router
from registry_mirror.stats.counters import Stats
from tests.unit.support.local_http import serve


@pytest.fixture
async def artifactory():
    """Answers tag lists by the user's Basic credential: dev reads tools/, anything else as `status` says."""
    seen: list[tuple[str, str]] = []
    answers: dict = {"status": None, "connections": set()}

    async def handler(request: web.Request) -> web.Response:
        user = base64.b64decode(request.headers.get("Authorization", "Basic ")[6:]).decode()
        seen.append((request.path_qs, user))
        answers["connections"].add(request.transport.get_extra_info("peername"))
        if answers["status"]:
            return web.json_response({"errors": []}, status=answers["status"])
        if user != "dev:pw":
            return web.json_response({"errors": []}, status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})
        if "/tools/" in request.path or request.path.endswith("/v2/"):
            return web.json_response({"name": "tools/lint", "tags": ["1.0"]})
        return web.json_response({"errors": [{"code": "DENIED"}]}, status=403)
    runner, port = await serve(handler)
    yield port, seen, answers
    await runner.cleanup()


@pytest.fixture
async def check_for():
    """ArtifactoryCheck of a route to 127.0.0.1:<port>, closed after the test."""
    made: list[ArtifactoryCheck] = []

    def make(port: int) -> ArtifactoryCheck:
        cfg = parse({"upstream": {"url": f"http://127.0.0.1:{port}", "repository": "docker-local",
                                  "username": "mirror", "password": "mirror-pw"}})
        made.append(ArtifactoryCheck(Router(cfg, Stats())))
        return made[-1]
    yield make
    for check in made:
        await check.close()


async def test_each_answer_is_a_verdict_asked_with_the_users_own_credential(artifactory, check_for):
    port, seen, _ = artifactory
    check = check_for(port)
    assert (await check.can_pull("dev", "pw", "tools/lint")).allowed
    assert seen[-1] == ("/artifactory/api/docker/docker-local/v2/tools/lint/tags/list?n=1", "dev:pw")
    refused = await check.can_pull("dev", "pw", "team/app")
    assert not refused.allowed and refused.reachable and "denies this user read access" in refused.reason
    wrong = await check.can_pull("dev", "guess", "tools/lint")
    assert wrong.bad_credential and "did not accept the credential" in wrong.reason
    assert (await check.login("dev", "pw")).allowed and seen[-1][0].endswith("/v2/")
    assert all(user != "mirror:mirror-pw" for _, user in seen)  # the mirror's own credential never asks
    assert check.questions == 4
    assert len(artifactory[2]["connections"]) == 1  # one kept connection, each question with its own credential


async def test_a_failing_or_unreachable_artifactory_is_no_decision(artifactory, check_for):
    port, _, answers = artifactory
    answers["status"] = 503
    assert not (await check_for(port).can_pull("dev", "pw", "tools/lint")).reachable
    answers["status"] = 404
    missing = await check_for(port).can_pull("dev", "pw", "tools/gone")
    assert missing.reachable and "no such image" in missing.reason
    closed = check_for(1)  # nothing listens on port 1
    assert not (await closed.can_pull("dev", "pw", "tools/lint")).reachable


async def test_a_route_known_down_is_not_asked(artifactory, check_for):
    port, seen, _ = artifactory
    check = check_for(port)
    health = check.router.routes["upstream"].health
    for _ in range(3):
        health.failure("refused")
    verdict = await check.can_pull("dev", "pw", "tools/lint")
    assert not verdict.reachable and "is down" in verdict.reason and seen == []
