"""Reconciliation with the payment gateways: pull each gateway's captured payments through its own
API, credit those the ledger lacks through the webhook's own dedup path, report every mismatch.

    core.py          the decisions (gateway list vs ledger window → credits, findings) and the report
    razorpay_api.py  Razorpay's payments list via the official SDK: paging, 429 and 5xx handling
    service.py       `Reconciler`: runs in the front-door process, periodic and on demand
    http.py          ``POST /v1/admin/reconcile`` (what ``jodo reconcile`` calls) and the periodic task
"""

from jodo.reconcile.core import MISMATCH_KINDS, Finding, Report
from jodo.reconcile.service import Reconciler, ReconcileRefused

__all__ = ["MISMATCH_KINDS", "Finding", "ReconcileRefused", "Reconciler", "Report"]
