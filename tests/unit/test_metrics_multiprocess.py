"""telemetry.metrics across processes: forked children count into one /metrics, and a SIGKILLed child's
counters survive it while its live gauges vanish once the supervisor marks it dead.

Each scenario runs in a fresh interpreter (the starter), so this pytest process stays in-process mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]

# The starter: sets up the directory, then forks "actors" the way Thespian does (os.fork from the
# starter, after set-up). Prints one JSON list: the /metrics text after each step.
STARTER = textwrap.dedent(
    """
    import json, os, signal, sys
    from telemetry import metrics as m

    m.configure_labels(gateways=["razorpay"], head_ends=["hes-a"])
    m.setup_multiproc_dir(sys.argv[1])
    snapshots = []

    def actor(payments, pending, fate):
        go_r, go_w = os.pipe()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            m.process_started("meter_shard")
            for _ in range(payments):
                m.payment_received("razorpay", "accepted")
            m.payment_reconnected("hes-a", 2.0)
            m.set_relay_commands_pending("hes-a", pending)
            m.set_breaker_state("hes-a", "open" if fate == "kill" else "closed")
            if fate == "kill":
                os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no flush: as a supervisor's victim
            os.write(ready_w, b"r")
            os.read(go_r, 1)  # a live actor: wait until told to exit
            os._exit(0)
        os.close(go_r)
        os.close(ready_w)
        if fate != "kill":
            assert os.read(ready_r, 1) == b"r"
        return pid, go_w

    def settle(pid):
        os.waitpid(pid, 0)

    a, _ = actor(payments=3, pending=5, fate="kill")
    settle(a)
    snapshots.append(m.render().decode())          # 0: A died, not yet marked dead
    m.mark_dead(a)
    snapshots.append(m.render().decode())          # 1: A marked dead
    b, b_go = actor(payments=4, pending=2, fate="live")
    snapshots.append(m.render().decode())          # 2: B (the restart) alive
    os.write(b_go, b"x")
    settle(b)
    m.mark_dead(b)
    snapshots.append(m.render().decode())          # 3: B exited and marked dead
    print(json.dumps({"snapshots": snapshots, "starter_pid": os.getpid(), "pids": [a, b]}))
    """
)


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}


def _run_starter(directory: Path) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", STARTER, str(directory)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


def _value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_a_killed_childs_counts_survive_and_its_live_gauges_vanish_when_marked_dead(tmp_path: Path) -> None:
    out = _run_starter(tmp_path / "metrics")
    snaps = out["snapshots"]
    assert isinstance(snaps, list)
    paid = [_value(s, "jodo_payments_received_total", gateway="razorpay", outcome="accepted") for s in snaps]
    # Counted once each, never backwards, across the kill and the restart.
    assert paid == [3, 3, 7, 7]
    reconnects = [_value(s, "jodo_payment_to_relay_connected_seconds_count", head_end="hes-a") for s in snaps]
    assert reconnects == [1, 1, 2, 2]
    assert _value(snaps[3], "jodo_payment_to_relay_connected_seconds_bucket", head_end="hes-a", le="5.0") == 2

    pending = [_value(s, "jodo_relay_commands_pending", head_end="hes-a") for s in snaps]
    assert pending[0] == 5, "a dead child's gauge stays until the supervisor marks it dead"
    assert pending[1] in (None, 0), "marked dead: its gauge is gone"
    assert pending[2] == 2, "only the live replacement's share"
    assert pending[3] in (None, 0)

    processes = [_value(s, "jodo_actor_processes", kind="meter_shard") for s in snaps]
    assert processes[1] in (None, 0) and processes[2] == 1 and processes[3] in (None, 0)

    # livemax: the dead gateway's "open" stops counting once it is marked dead.
    breaker = [_value(s, "jodo_headend_breaker_state", head_end="hes-a") for s in snaps]
    assert breaker[0] == 2 and breaker[1] is None and breaker[2] == 0


def test_the_killed_childs_counter_file_stays_and_its_gauge_files_go(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    out = _run_starter(directory)
    pids = out["pids"]
    assert isinstance(pids, list)
    files = {p.name for p in directory.iterdir()}
    for pid in pids:
        assert f"counter_{pid}.db" in files
        assert f"histogram_{pid}.db" in files
        assert not any(name.startswith("gauge_live") and name.endswith(f"_{pid}.db") for name in files)


def test_node_start_empties_the_directory_of_a_previous_run(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    _run_starter(directory)
    (directory / "README").write_text("not ours\n")
    out = _run_starter(directory)
    snaps = out["snapshots"]
    assert isinstance(snaps, list)
    assert _value(snaps[3], "jodo_payments_received_total", gateway="razorpay", outcome="accepted") == 7
    assert (directory / "README").exists(), "only *.db files are removed"


def test_a_process_started_with_the_directory_in_its_environment_counts_too(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    _run_starter(directory)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    code = ("from telemetry import metrics as m; m.payment_received('razorpay', 'accepted'); "
            "m.desk_saturated()")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
    render = "import sys; from telemetry import metrics as m; sys.stdout.write(m.render().decode())"
    text = subprocess.run(
        [sys.executable, "-c", render],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    # This process did not configure labels, so its gateway is "other"; the starter's 7 remain.
    assert _value(text, "jodo_payments_received_total", gateway="razorpay", outcome="accepted") == 7
    assert _value(text, "jodo_payments_received_total", gateway="other", outcome="accepted") == 1
    assert _value(text, "jodo_desk_saturated_total") == 1


# Scrapes while actor processes start and die: a new process's file exists before it is sized.
STORM = textwrap.dedent(
    """
    import os, sys, time
    from telemetry import metrics as m

    m.setup_multiproc_dir(sys.argv[1])
    children = 60
    if os.fork() == 0:  # the supervisor: starts actors one after another
        for _ in range(children):
            pid = os.fork()
            if pid == 0:
                m.desk_saturated()
                m.set_payments_unapplied(1)
                os._exit(0)
            os.waitpid(pid, 0)
            m.mark_dead(pid)
        os._exit(0)
    renders = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = m.render().decode()  # must never raise
        renders += 1
        if f"jodo_desk_saturated_total {children}.0" in text:
            break
    os.wait()
    print(renders, m.render().decode().count("jodo_desk_saturated_total 60.0"))
    """
)


def test_scrapes_never_fail_while_actor_processes_start_and_die(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", STORM, str(tmp_path / "metrics")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
    )
    assert result.returncode == 0, result.stderr
    renders, final = result.stdout.split()
    assert int(renders) > 1 and final == "1"
