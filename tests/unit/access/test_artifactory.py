"""Whether a user may pull, asked of a stand-in Artifactory with the user's own credential through the route that
serves the name: each answer's verdict, and the credential sent to the route's origin only."""
import asyncio
import base64

import pytest
from aiohttp import web
from multidict import CIMultiDict

from registry_mirror.access.artifactory import DENIED, ArtifactoryCheck, _verdict
from registry_mirror.config.load import parse
from registry_mirror.routes.routing import Router
from registry_mirror.stats.counters import Stats
from registry_mirror.upstream.client import SmallResponse
from tests.unit.support.local_http import serve
from tests.unit.support.waits import until


@pytest.fixture
async def artifactory():
    """Answers tag lists by the user's Basic credential: dev reads tools/, anything else as `status` says."""
    seen: list[tuple[str, str]] = []
    answers: dict = {"status": None, "connections": set()}

    async def handler(request: web.Request) -> web.Response:
        user = base64.b64decode(request.headers.get("Authorization", "Basic ")[6:]).decode()
        seen.append((request.path_qs, user))
        answers["connections"].add(request.transport.get_extra_info("peername"))
        if answers.get("hold"):
            await answers["hold"].wait()
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

    def make(port: int, routes=(), **limits) -> ArtifactoryCheck:
        cfg = parse({"upstream": {"url": f"http://127.0.0.1:{port}", "repository": "docker-local",
                                  "username": "mirror", "password": "mirror-pw"}, "routes": list(routes)})
        made.append(ArtifactoryCheck(Router(cfg, Stats()), **limits))
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


async def test_a_name_served_from_another_host_is_refused_without_sending_the_password(artifactory, check_for):
    port, seen, _ = artifactory
    check = check_for(port, routes=[{"prefix": "hub", "url": "http://127.0.0.1:1", "anonymous": True,
                                     "path_prefix": ""},
                                    {"prefix": "open", "anonymous": True}])
    for name in ("hub/nginx", "open/tool"):  # another host; Artifactory's origin without a credential
        verdict = await check.can_pull("dev", "pw", name)
        assert not verdict.allowed and verdict.reachable and not verdict.lasting and "not Artifactory" in verdict.reason
    assert seen == [] and check.questions == 0


def test_a_401_to_a_token_artifactory_granted_is_no_read_permission_not_a_wrong_password():
    denied = _verdict(SmallResponse(401, CIMultiDict(), b"", "Bearer"))
    assert denied.reason == DENIED and not denied.bad_credential
    assert _verdict(SmallResponse(401, CIMultiDict(), b"", "Basic")).bad_credential
    assert not _verdict(SmallResponse(404, CIMultiDict(), b"", "Basic")).lasting  # maybe pushed in a moment


async def test_questions_to_one_route_are_capped(artifactory, check_for):
    port, seen, answers = artifactory
    answers["hold"] = asyncio.Event()
    check = check_for(port, max_questions=1)
    first = asyncio.ensure_future(check.can_pull("dev", "pw", "tools/lint"))
    await until(lambda: len(seen) == 1, "the first question to reach Artifactory")
    crowded = await check.can_pull("dev", "pw", "tools/other")
    assert not crowded.reachable and "1 questions to Artifactory are under way" in crowded.reason
    answers["hold"].set()
    assert (await first).allowed


async def test_a_question_not_answered_within_the_timeout_is_no_decision(artifactory, check_for):
    port, _, answers = artifactory
    answers["hold"] = asyncio.Event()  # never set: Artifactory accepted the request and hangs
    verdict = await check_for(port, timeout=0.2).can_pull("dev", "pw", "tools/lint")
    assert not verdict.reachable and verdict.reason == "Artifactory did not answer within 0.2 s"
    answers["hold"].set()
