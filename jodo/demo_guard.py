"""The demo's mass-disconnect guard: its settings for the fleet size, and the operator who approves.

The first lawful morning cuts every overdue meter at once; the guard lets the first waves leave,
holds the rest (more than ``max_per_hour`` in an hour) and the demo's operator approves the held
wave through the admin API (POST /v1/disconnects/waves/{id}/approve), as a person would after
checking the bill run. The numbers are the demo's, chosen so a held wave shows at any fleet size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["OPERATOR", "DemoGuard", "guard_env"]

OPERATOR = "demo-operator"
_POLL_S = 0.25


def guard_env(meters: int) -> dict[str, str]:
    """[disconnects] for the demo: waves of 5 % of the fleet, each gateway tick (spacing 0), at most
    10 % of the fleet an hour before a wave is held."""
    per_hour = max(20, meters // 10)
    return {"JODO_DISCONNECTS__WAVE_SIZE": str(max(10, meters // 20)),
            "JODO_DISCONNECTS__WAVE_SPACING_S": "0",
            "JODO_DISCONNECTS__MAX_PER_HOUR": str(per_hour),
            "JODO_DISCONNECTS__MAX_PER_HOUR_TOTAL": str(per_hour * 2)}


@dataclass
class DemoGuard:
    url: str
    admin_token: str
    approved: list[dict[str, Any]] = field(default_factory=list)
    last_poll: float = 0.0

    async def approve_held(self, pending: int) -> list[dict[str, Any]]:
        """Approve every held wave once the node waits on nothing else (``pending`` commands in the
        shards are all kept by the guard). Returns the waves approved now."""
        now = time.monotonic()
        if now - self.last_poll < _POLL_S:
            return []
        self.last_poll = now
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.get(f"{self.url}/v1/disconnects?status=held") as r:
                doc = await r.json()
                if r.status == 503:  # the guard store is busy (a gateway writing): ask at the next poll
                    return []
                if r.status != 200:
                    raise RuntimeError(f"GET /v1/disconnects answered {r.status}: {doc}")
            mine = {w["wave_id"] for w in self.approved}
            held = [w for w in doc["waves"] if w["wave_id"] not in mine]  # (held until the gateway's tick)
            if not held or sum(w["kept"] for w in held) < pending:
                return []  # waves still forming, or commands still out at the head-end
            done = []
            for w in held:
                url = f"{self.url}/v1/disconnects/waves/{w['wave_id']}/approve"
                async with session.post(url, json={"approver": OPERATOR}) as r:
                    answer = await r.json()
                    if r.status != 200:
                        raise RuntimeError(f"approving {w['wave_id']} answered {r.status}: {answer}")
                done.append({"wave_id": w["wave_id"], "kept": w["kept"], "reason": w["reason"],
                             "approved_by": answer["approvers"]})
        self.approved += done
        return done
