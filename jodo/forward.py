"""Cluster: a request about a meter whose shard group another node serves goes to that node.

A node's shards serve only the groups whose leases it holds, so `GET /v1/meters/{account}`,
its history, an injected meter command or a `/v1/admin/meter-commands` batch that lands on
another node is forwarded once, to the owner's front door (its `http_url` in the members table,
found through this node's keeper), with the same admin token. A forwarded request carries
`X-Jodo-Forwarded`; a node never forwards such a request again (an owner that has just lost the
group answers "not served" and the caller retries: a group moves within the failover bound).
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from jodo.errors import RequestRefused

__all__ = ["FORWARDED_HEADER", "Forwarder", "forwarded", "merge_rejections", "owner_url"]

FORWARDED_HEADER = "X-Jodo-Forwarded"
#: set by the front door for a request that was forwarded to us: never forward it again
forwarded: contextvars.ContextVar[bool] = contextvars.ContextVar("jodo_forwarded", default=False)


def owner_url(view: Mapping[str, Any], group: int) -> str | None:
    """The front door of the live member serving `group` per the keeper's `view`, or None."""
    lease = next((x for x in view.get("leases", ()) if x.get("resource") == f"group:{group}"), None)
    if lease is None or not lease.get("owner") or float(lease.get("expires_in_s", 0)) <= 0:
        return None
    member = next((m for m in view.get("members", ()) if m.get("node_id") == lease["owner"]), None)
    return None if member is None else str(member.get("http_url") or "") or None


class Forwarder:
    """Sends one request to the node serving a group. `token`: the admin token (shared by nodes)."""

    def __init__(self, token: str | None, *, timeout_s: float = 30.0) -> None:
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def request(
        self, view: Mapping[str, Any], group: int, method: str, path: str, *,
        body: bytes | None = None, content_type: str = "application/json",
    ) -> Any:
        """The owner's JSON answer; None for its 404. Raises RequestRefused (its error, or 503)."""
        if forwarded.get():
            raise RequestRefused(503, "unavailable", f"shard group {group} is moving between nodes; retry")
        url = owner_url(view, group)
        if url is None or url == view.get("http_url"):
            raise RequestRefused(503, "unavailable",
                                 f"shard group {group} has no serving owner right now (failing over); retry")
        if self.token is None:
            raise RequestRefused(503, "unavailable", f"shard group {group} is served by {url}; ask it there "
                                 "(forwarding needs [tokens] admin)")
        headers = {"Authorization": f"Bearer {self.token}", FORWARDED_HEADER: "1",
                   "Content-Type": content_type}
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session, \
                    session.request(method, url + path, data=body, headers=headers) as answer:
                doc = await answer.json(content_type=None)
                if answer.status == 404:
                    return None
                if answer.status >= 400:
                    error = doc if isinstance(doc, dict) else {}
                    raise RequestRefused(answer.status, str(error.get("error", "forwarded")),
                                         f"{url}: {error.get('detail', answer.reason)}")
                return doc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RequestRefused(503, "unavailable", f"shard group {group}'s node {url} did not answer "
                                 f"({type(exc).__name__}); retry") from None


def merge_rejections(
    local: Sequence[tuple[int, str]], remote: Mapping[int, tuple[Sequence[int], Any]]
) -> list[tuple[int, str]]:
    """Rejections of a batch split between this node and owners: `remote` maps group → (indexes of
    the original batch it got, the owner's answer {"rejected": [{"index", "reason"}]})."""
    out = list(local)
    for indexes, answer in remote.values():
        for item in (answer or {}).get("rejected", ()):
            i = int(item.get("index", -1))
            out.append((indexes[i] if 0 <= i < len(indexes) else -1, str(item.get("reason", ""))))
    return sorted(out)
