"""A DLMS/COSEM meter-fleet simulator on Gurux's server stack (GPLv2: the ``sim-dlms`` extra, tests only).

- `server`: `DlmsFleetSim` (fleet truth, faults), `DlmsSimulatorThread` (asyncio on a thread)
- `meter`: `MeterServer`, one association's server end (`gurux_dlms.GXDLMSServer`)
- `transitions`: class-70 transitions a-h
"""
