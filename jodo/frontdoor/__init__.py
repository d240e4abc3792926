"""The front door: an aiohttp app in front of the node (webhooks, payment batches, admin, probes).

    app = build_app(config, backend)          # backend: anything implementing `Backend`
    runner, port = await start_site(app, config.http.host, config.http.port)

`FakeBackend` is an in-memory `Backend` for tests and the bench. Routes are listed in
`jodo.frontdoor.app`.
"""

from jodo.frontdoor.app import BACKEND, BATCHER, CONFIG, WebhookObserver, build_app, start_site
from jodo.frontdoor.backend import UNMATCHED, Backend, Saturated, match_results, result_word
from jodo.frontdoor.batcher import BatcherStats, MicroBatcher
from jodo.frontdoor.fake import FakeBackend

__all__ = [
    "BACKEND",
    "BATCHER",
    "CONFIG",
    "UNMATCHED",
    "Backend",
    "BatcherStats",
    "FakeBackend",
    "MicroBatcher",
    "Saturated",
    "WebhookObserver",
    "build_app",
    "match_results",
    "result_word",
    "start_site",
]
