"""`jodo demo --prepaid`: a month of prepaid smart meters on one node (issue 16), end to end.

The same node as `jodo demo` (embedded defaults, the lab clock, the built-in simulated head-end, the real
HTTP front door; data in a temporary dir), and a different month — November 2026, Indore (IST):

1. Register the fleet (``--meters``, default 5 000) and switch every meter to prepaid with a seeded opening
   balance (Rs 300-2 500, a multiple of Rs 100: a KERC recharge). All are remotely switchable (DLMS control
   mode 2: a recharge reconnects without the consumer's button); a few are protected (life support).
2. Every night at 01:00 the previous day's reads arrive: each meter's energy from the seeded load
   profile (`headend.sim.load.daily_wh`), scaled by the hours its relay was closed at the head-end that
   day (checked at 07:00, 08:00 and 12:00; a meter off all day reads 0 Wh and pays the day's fixed
   charge), sent to the shards as `ReportConsumption` batches (`MeterCommandBatch`, as `jodo import
   reads` / `POST /v1/admin/meter-commands` send them). The debits bring low-balance notices (75 % used,
   about 3 days left) and, at zero, the "zero" notice — and the cut is HELD: 01:00 is inside the
   friendly hours (18:00-08:00; Sundays all day).
3. 07:00: some consumers told "zero" ask for emergency credit (`POST /v1/meters/{account}/emergency-credit`);
   once a month each: a second request that month is refused (409).
4. 08:00 (not on Sunday): the held cuts run. Every relay the head-end opens is attributed to the
   lab-clock step in which it opened, and checked against the windows: no cut may open inside one.
5. 12:00: most of the cut consumers recharge by signed webhook (Razorpay and BBPS formats, a few gateway
   retries), enough to clear the negative balance and any emergency credit; the demo watches their relays
   close at the simulator (wall time from the webhook's 2xx to the relay read closed, as `jodo demo`).
6. A summary (``--json``); everything is shut down.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.parse
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

import aiohttp

from domain.commands import RegisterMeter, ReportConsumption, SetBillingMode
from domain.enums import BillingMode
from domain.policy import load_policy
from domain.windows import disconnection_allowed
from headend.sim.load import daily_wh, read_id
from jodo.demo import IST, Consumer, Demo, Request, _local, _pct, _ts, account, serial
from jodo.demo_guard import guard_env
from protocols.headend import HesControlState

__all__ = ["PrepaidDemo"]

FIRST_DAY = date(2026, 11, 1)  # a Sunday
DAYS = 30
_CONNECTED = int(HesControlState.CONNECTED)
_DISCONNECTED = int(HesControlState.DISCONNECTED)


def _at(day: date, hour: int) -> int:
    return _ts(datetime(day.year, day.month, day.day, hour, 0, tzinfo=IST))


class PrepaidDemo(Demo):
    """`Demo`'s node, front door and watchers; a prepaid month instead of a bill run."""

    MODES = ((2, 1.0),)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = _at(FIRST_DAY, 9)
        self.opening: dict[int, int] = {}
        self.notice_offsets: dict[str, int] = {}
        self.thresholds: Counter[str] = Counter()
        self.zero_now: set[int] = set()  # told "zero" since the last 07:00
        self.states = b""
        self.on_hours: list[int] = []
        self.steps: list[dict[str, Any]] = []  # lab-clock step -> relays opened / closed at the head-end
        self.cuts_by_morning: Counter[str] = Counter()
        self.held_by_night: dict[str, int] = {}
        self.emergency: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        self.recharge: Counter[str] = Counter()

    def _guard_env(self) -> dict[str, str]:
        # The mass-disconnect guard counts cuts per hour of wall time, and this demo runs a month of mornings
        # in about a minute: with `jodo demo`'s limits every morning's cuts would be held as one hour's.
        return guard_env(self.n * 10)

    def _title(self) -> str:
        return (f"jodo demo --prepaid: {self.n:,} prepaid meters, November 2026 in Indore (IST); "
                f"data in {self.data}")

    # ------------------------------------------------------------ the month

    async def _month(self) -> None:
        await self._prepaid_fleet()
        self.states = await self._sim_states()
        policy = load_policy()
        self.on_hours = [24] * self.n  # the first day: connected all day
        for d in range(DAYS):
            day = FIRST_DAY + timedelta(days=d)
            after = day + timedelta(days=1)
            started = time.monotonic()
            await self._read_night(day, _at(after, 1))
            self.on_hours = [0] * self.n  # `after`'s hours, read the next night
            await self._emergency_morning(_at(after, 7))
            await self._step(_at(after, 8), "cuts")
            if not disconnection_allowed(_at(after, 8), policy):
                self.out.say(f"  {_local(_at(after, 8))}: no automatic cut today (a friendly day): the held "
                             "cuts wait for the next allowed morning")
            await self._recharge_noon(_at(after, 12))
            took = time.monotonic() - started
            self.out.status(f"  day {day.isoformat()} · cuts {sum(self.cuts_by_morning.values()):,} · "
                            f"reconnected {len(self.tally.closed_after):,} · {took:.1f} s")
        self._phase(f"{DAYS} days of reads, notices, held cuts, cuts and recharges "
                    f"(to {_local(self.clock)})", self._month_started)

    async def _prepaid_fleet(self) -> None:
        started = time.monotonic()
        rng = self.rng
        for i in range(self.n):
            self.consumers.append(Consumer(index=i, install_year=rng.randint(2020, 2024), mode=2,
                                           protected=rng.random() < 0.005, bill_paise=0, pays_early=False))
            self.opening[i] = rng.randint(3, 25) * 10_000
        await self._send([RegisterMeter(account=account(c.index), serial=serial(c.index), head_end="hes-sim",
                                        install_year=c.install_year, relay_capable=True, control_mode=c.mode,
                                        protected=c.protected) for c in self.consumers], "register meters")
        self._phase(f"register {self.n:,} meters (through the shards' journals)", started)
        started = time.monotonic()
        await self._send([SetBillingMode(account=account(i), mode=BillingMode.PREPAID,
                                         opening_balance_paise=self.opening[i], request_id=f"pp-{i}")
                          for i in range(self.n)], "switch to prepaid")
        total = sum(self.opening.values())
        self._phase(f"switch {self.n:,} meters to prepaid (opening balances Rs {total / 100:,.0f} in all)",
                    started)
        self._month_started = time.monotonic()

    async def _step(self, t: int, what: str) -> tuple[int, int]:
        """Move the lab clock to `t` (the shards sweep), wait for the head-end, and record which relays
        opened and closed at the head-end in this step."""
        self.clock = t
        await self.backend.call(lambda c: c.set_clock(t), timeout=120.0)
        await self._settle()
        return self._record(t, what, await self._sim_states())

    def _record(self, t: int, what: str, now: bytes) -> tuple[int, int]:
        before = self.states
        opened = sum(1 for a, b in zip(before, now, strict=True) if a == _CONNECTED and b == _DISCONNECTED)
        closed = sum(1 for a, b in zip(before, now, strict=True) if a != _CONNECTED and b == _CONNECTED)
        self.states = now
        if opened or closed:
            self.steps.append({"at": _local(t), "t": t, "what": what, "opened": opened, "closed": closed,
                               "allowed": disconnection_allowed(t, load_policy())})
        if opened and what == "cuts":
            self.cuts_by_morning[_local(t)] += opened
        return opened, closed

    async def _sim_states(self) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.sim.call(lambda s: bytes(s.fleet.control_state[:self.n])))

    def _held_now(self) -> set[int]:
        """Told 'zero' and still on, its cut held: protected consumers are told too but never cut."""
        return {i for i in self.zero_now if self.states[i] == _CONNECTED and not self.consumers[i].protected}

    # ------------------------------------------------------------ 01:00: yesterday's reads

    async def _read_night(self, day: date, t: int) -> None:
        await self._step(t, "reads")  # the clock first: a read is for a day before the local today
        hours = self.on_hours
        commands = []
        for i in range(self.n):
            s = serial(i)
            wh = daily_wh(self.args.seed, s, day) * hours[i] // 24
            commands.append(ReportConsumption(account=account(i), read_id=read_id(s, day),
                                              read_date=day.isoformat(), energy_wh=wh))
        held_before = await self._held_metric()
        await self._send(commands, f"reads for {day.isoformat()}")
        self.reads["sent"] += len(commands)
        await self._settle()
        self._record(t, "reads", await self._sim_states())
        for notice in self._new_notices():
            if notice["template"] == "low_balance":
                self.thresholds[str(notice["ref"])] += 1
                if notice["ref"] == "zero":
                    self.zero_now.add(int(notice["account"][1:]))
        held = await self._held_metric() - held_before
        if held:
            self.held_by_night[f"{_local(t)} ({day.isoformat()}'s reads)"] = held

    def _new_notices(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for path in sorted((self.data / "outbox").glob("notices-*.jsonl")):
            offset = self.notice_offsets.get(path.name, 0)
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
            self.notice_offsets[path.name] = offset + end
            found.extend(json.loads(line) for line in chunk[:end].splitlines() if line)
        return found

    async def _held_metric(self) -> int:
        async with aiohttp.ClientSession() as session, session.get(self.url + "/metrics") as r:
            text = await r.text()
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                   if line.startswith("jodo_prepaid_disconnections_held_total"))

    # ------------------------------------------------------------ 07:00: emergency credit

    async def _emergency_morning(self, t: int) -> None:
        await self._step(t, "emergency credit")
        asking = sorted(i for i in self._held_now() if self.rng.random() < 0.3)
        self._tick_hours(8)
        headers = {"Authorization": f"Bearer {self.admin_token}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session:
            for i in asking:
                body = json.dumps({"request_id": f"ec-{i}-{t}", "channel": "app"})
                async with session.post(f"{self.url}/v1/meters/{account(i)}/emergency-credit", data=body,
                                        headers=headers) as r:
                    doc = await r.json()
                    if r.status == 200:
                        self.emergency["granted"] += 1
                        if doc["meter"]["balance_paise"] > 0:
                            self.emergency["granted_balance_above_zero"] += 1
                    else:
                        self.emergency[f"refused_{r.status}"] += 1
                        detail = str(doc.get("detail", ""))
                        if "already granted in" in detail:
                            self.emergency["refused_once_a_month"] += 1
                        elif "still outstanding" in detail:
                            self.emergency["refused_outstanding"] += 1
        await self._settle()
        self._record(t, "emergency credit", await self._sim_states())
        self.zero_now.clear()

    def _tick_hours(self, hours: int) -> None:
        """Count `hours` of the day for each meter whose relay is closed at the head-end now (the day's
        checkpoints: 00-08 by the 07:00 state, 08-12 after the morning's cuts, 12-24 after the recharges)."""
        for i, s in enumerate(self.states):
            if s == _CONNECTED:
                self.on_hours[i] += hours

    # ------------------------------------------------------------ 12:00: recharges

    async def _recharge_noon(self, t: int) -> None:
        self._tick_hours(4)  # 08-12, as the morning's cuts left them
        await self._step(t, "recharges")
        off = [i for i, s in enumerate(self.states) if s == _DISCONNECTED]
        payers = [i for i in off if self.rng.random() < 0.6]
        if payers:
            await self._recharge(payers, t)
        self._tick_hours(12)

    async def _recharge(self, payers: list[int], t: int) -> None:
        rng = self.rng
        meters = await self._meters(payers)
        requests: list[Request] = []
        for i in payers:
            m = meters[i]
            owed = m["emergency_credit_paise"] - m["balance_paise"]  # recovered first, then the balance
            amount = -(-(owed + rng.randint(1, 15) * 10_000) // 10_000) * 10_000  # a multiple of Rs 100
            req = self._webhook(i, amount, t - rng.randint(0, 600), rng.random() < 0.5)
            requests.append(req)
            if rng.random() < 0.05:  # the gateway delivers it again
                requests.append(Request(req.key + rng.random() * (1 - req.key), "duplicate", i, req.path,
                                        req.body, req.headers))
        requests.sort(key=lambda r: r.key)
        waiting: dict[int, float] = {}
        done = asyncio.Event()
        watcher = asyncio.create_task(self._watch(waiting, done))
        await self._post_webhooks(requests, waiting)
        done.set()
        await watcher
        self.recharge["from_off"] += len(payers)
        await self._settle()
        self._record(t, "recharges", await self._sim_states())

    async def _meters(self, indexes: list[int]) -> dict[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        found: dict[int, dict[str, Any]] = {}
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> None:
                url = f"{self.url}/v1/meters/{urllib.parse.quote(account(i))}"
                async with session.get(url, headers=headers) as r:
                    doc = await r.json()
                    if r.status != 200:
                        raise RuntimeError(f"GET {url} answered {r.status}: {doc}")
                    found[i] = doc

            for start in range(0, len(indexes), 64):
                await asyncio.gather(*(one(i) for i in indexes[start:start + 64]))
        return found

    # ------------------------------------------------------------ summary

    async def _summary(self, wall: float) -> dict[str, Any]:
        counts = await self._settled_counts()
        meters = await self._meters(list(range(self.n)))
        on_at_zero = [i for i, m in meters.items() if m["balance_paise"] <= 0 and m["relay"] == "connected"]
        protected_on = sum(1 for i in on_at_zero if self.consumers[i].protected)
        metrics = await self._metrics()
        t = self.tally
        results = t.results
        accepted = results["pay:accepted"]
        off_at_end = sum(1 for s in self.states if s == _DISCONNECTED)
        cuts = sum(s["opened"] for s in self.steps)
        reconnected = sum(s["closed"] for s in self.steps)
        in_window = [s for s in self.steps if s["opened"] and not s["allowed"]]
        orders = self._work_orders()
        ok = (len(t.closed_after) == accepted and not in_window and t.awaiting_button == 0
              and len(on_at_zero) == protected_on and not orders
              and cuts - reconnected == off_at_end and counts["paid_but_disconnected"] == 0
              and results["pay:accepted"] == self.recharge["from_off"])
        return {
            "ok": ok,
            "meters": self.n,
            "prepaid": sum(metrics["bands"].values()),
            "wall_seconds": round(wall, 1),
            "phases": [{"phase": p, "seconds": round(s, 1)} for p, s in self.phases],
            "month": f"{FIRST_DAY.isoformat()}..{(FIRST_DAY + timedelta(days=DAYS - 1)).isoformat()}",
            "opening_balance_paise": sum(self.opening.values()),
            "reads": {"sent": self.reads["sent"], **metrics["reads"]},
            "low_balance_notices": {k: self.thresholds[k] for k in ("used_75pc", "days_left_3", "zero")},
            "held": metrics["held"],
            "held_by_night": self.held_by_night,
            "cuts": cuts,
            "cuts_by_morning": dict(self.cuts_by_morning),
            "cuts_inside_a_window": sum(s["opened"] for s in in_window),
            "relay_steps": self.steps,
            "emergency_credit": {"requested": sum(v for k, v in self.emergency.items()
                                                  if k == "granted" or k.startswith("refused_4")),
                                 **dict(self.emergency), "metric": metrics["emergency"]},
            "recharges": {"from_off": self.recharge["from_off"], "accepted": accepted,
                          "duplicate": results["duplicate:duplicate"] + results["pay:duplicate"],
                          "other": {k: v for k, v in results.items()
                                    if k not in ("pay:accepted", "duplicate:duplicate", "pay:duplicate")}},
            "reconnected": len(t.closed_after),
            "reconnected_at_head_end": reconnected,
            "awaiting_button": t.awaiting_button,
            "recharge_to_connected_seconds": {"p50": round(_pct(t.closed_after, 0.5), 3),
                                              "p95": round(_pct(t.closed_after, 0.95), 3),
                                              "p99": round(_pct(t.closed_after, 0.99), 3),
                                              "max": round(max(t.closed_after, default=0.0), 3)},
            "off_at_end": off_at_end,
            "on_at_or_below_zero_at_end": {"meters": len(on_at_zero), "protected": protected_on},
            "work_orders": dict(orders),
            "balance_bands": metrics["bands"],
            "ledger": counts["ledger"], "relays": counts["relays"],
            "paid_but_disconnected": counts["paid_but_disconnected"],
            "guard_waves_approved": self.guard.approved if self.guard else [],
            "head_end": {"kind": "sim", "protocol": "jodo reference (headend/sim)"},
        }

    async def _metrics(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(self.url + "/metrics") as r:
            text = await r.text()
        found: dict[str, Any] = {"reads": {}, "emergency": {}, "bands": {}, "held": 0}
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            n = int(float(value))
            for prefix, key, label in (("jodo_prepaid_reads_total", "reads", "outcome"),
                                       ("jodo_emergency_credits_total", "emergency", "event"),
                                       ("jodo_prepaid_meters", "bands", "band")):
                if name.startswith(prefix + "{"):
                    tag = name.split(f'{label}="', 1)[1].split('"', 1)[0]
                    found[key][tag] = found[key].get(tag, 0) + n
            if name.startswith("jodo_prepaid_disconnections_held_total"):
                found["held"] += n
        return found

    def _print(self, s: dict[str, Any]) -> None:
        if self.args.json:
            print(json.dumps(s, indent=2), flush=True)
        out = sys.stderr if self.args.json else sys.stdout
        r, lb, ec, rc = s["reads"], s["low_balance_notices"], s["emergency_credit"], s["recharges"]
        lat = s["recharge_to_connected_seconds"]
        nights = sorted(s["held_by_night"].items(), key=lambda kv: -kv[1])[:3]
        mornings = ", ".join(f"{k}: {v:,}" for k, v in list(s["cuts_by_morning"].items())[:6])
        more = len(s["cuts_by_morning"]) - 6
        rows = [
            ("meters / prepaid", f"{s['meters']:,} / {s['prepaid']:,} (opening balances Rs "
                                 f"{s['opening_balance_paise'] / 100:,.0f}; month {s['month']})"),
            ("daily reads", f"{r['sent']:,} sent as ReportConsumption batches: {r.get('debited', 0):,} "
                            f"debited, {r.get('duplicate', 0):,} duplicate, {r.get('estimated', 0):,} "
                            f"estimated, {r.get('rejected', 0):,} rejected"),
            ("low-balance notices", f"75 % used {lb['used_75pc']:,}, about 3 days left "
                                    f"{lb['days_left_3']:,}, zero {lb['zero']:,}"),
            ("cuts held (friendly hours)", f"{s['held']:,} in all; the most: " + "; ".join(
                f"{k} {v:,}" for k, v in nights)),
            ("cuts (relay opened)", f"{s['cuts']:,}: {mornings}"
                                    f"{f' (+{more} more mornings)' if more > 0 else ''}"),
            ("cuts inside a window", f"{s['cuts_inside_a_window']} (every relay opening checked against the "
                                     "windows at its lab-clock step)"),
            ("emergency credit", f"{ec['requested']:,} asked: {ec.get('granted', 0):,} granted, "
                                 f"{ec.get('refused_409', 0):,} refused "
                                 f"({ec.get('refused_once_a_month', 0):,} once a month, "
                                 f"{ec.get('refused_outstanding', 0):,} one still outstanding)"),
            ("recharges of cut meters", f"{rc['from_off']:,} by webhook: {rc['accepted']:,} accepted, "
                                        f"{rc['duplicate']:,} duplicate (credited once)"),
            ("reconnected", f"{s['reconnected']:,} relays closed; {s['off_at_end']:,} still off at the end; "
                            f"on at or below zero: {s['on_at_or_below_zero_at_end']['meters']:,} (protected "
                            f"{s['on_at_or_below_zero_at_end']['protected']:,})"),
            ("recharge -> connected", f"p50 {lat['p50']:.3f} s  p95 {lat['p95']:.3f} s  p99 "
                                      f"{lat['p99']:.3f} s (wall clock: webhook 2xx -> relay closed at the "
                                      "head-end, polled every 50 ms)"),
            ("balances at the end", ", ".join(f"{k} {v:,}" for k, v in s["balance_bands"].items())),
            ("wall time", f"{s['wall_seconds']:.0f} s; shutdown {s['shutdown']}"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = ["", "jodo demo --prepaid: summary", *(f"  {k:<{width}}  {v}" for k, v in rows)]
        if not s["ok"]:
            lines.append("  SOMETHING IS OFF: a recharge did not reconnect, a cut opened inside a window, or "
                         "the head-end's relays do not add up")
        print("\n".join(lines), file=out, flush=True)
