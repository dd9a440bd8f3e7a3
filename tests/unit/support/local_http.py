"""A real HTTP server on 127.0.0.1 for unit tests of the upstream client: aiohttp with one handler."""
from aiohttp import web


async def serve(handler) -> tuple[web.AppRunner, int]:
    """Every method and path to `handler`; the runner (for cleanup) and the port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]
