"""End to end on real processes with a DLMS head-end: payment → shard → gateway (DLMS adapter) → a meter on
Gurux's server stack → relay read back → the shard's state; a mode-1 meter ends awaiting the button."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.deadletters import DATA_DIR_ENV
from domain.enums import RelayState
from headend.dlms_sim.server import DlmsSimulatorThread
from jodo.client import NodeClient
from jodo.node import Node
from jodo.tree import HeadEnd, TreeOptions, jodo_tree, root_flags
from protocols.dlms import DlmsGatewayOptions
from protocols.headend import HesControlState
from tests.system.conftest import free_port
from tests.system.jodo_fixtures import HEAD_END, STORED_SINK, account, eventually, payment, register, serial

pytestmark = pytest.mark.system


def test_paid_meters_reconnect_through_the_dlms_adapter_and_mode_1_awaits_the_button(
    start_node: Callable[..., Node], tmp_path: Path
) -> None:
    port = free_port()
    dlms = DlmsGatewayOptions(password="flow-pw1", pool_size=8, response_timeout=1.0)
    opts = TreeOptions(
        data_dir=str(tmp_path / "data"), groups=2, synchronous="normal",
        head_ends=(HeadEnd(name=HEAD_END, host="127.0.0.1", port=port, command_timeout=10.0, dlms=dlms),),
    )
    os.environ[DATA_DIR_ENV] = opts.data_dir
    try:
        node = start_node(jodo_tree(opts), root_flags(), dead_letter_sink=STORED_SINK)
    finally:
        os.environ.pop(DATA_DIR_ENV, None)
    # started after the node: forked actors would otherwise inherit its listening socket
    with DlmsSimulatorThread(50, port=port, password=b"flow-pw1") as sim:
        for i in range(12):
            sim.sim.set_meter(serial(i), 1 if i == 11 else 2, HesControlState.DISCONNECTED)
        client = NodeClient(node, groups=2)
        meters = register(12)
        meters[11] = register(12, mode=1)[11]
        assert client.send(meters) == []
        client.pay([payment(i) for i in (0, 2, 4, 11)])
        paid = [serial(i) for i in (0, 2, 4)]
        connected = HesControlState.CONNECTED
        eventually(lambda: all(sim.sim.relay_state(s).control_state is connected for s in paid),
                   what="paid meters connected at the Gurux server")
        assert sim.sim.relay_state(serial(1)).control_state is HesControlState.DISCONNECTED
        eventually(lambda: (lambda m: m if m and m.relay is RelayState.CONNECTED else None)(
            client.meter(account(0))), what="the shard to see the read-back")
        eventually(lambda: (lambda m: m if m and m.relay is RelayState.AWAITING_BUTTON else None)(
            client.meter(account(11))), what="the mode-1 meter awaiting the button")
        assert sim.sim.relay_state(serial(11)).control_state is HesControlState.READY_FOR_RECONNECTION
        assert sim.sim.stats.associations >= 4
