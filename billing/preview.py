"""The running month so far, as if it ended now: counts, totals, an invoice estimate.

The same plan and fold as a close (billing.planning, billing.tenant_fold) with the cut-off
at `now`, in this process and in the caller's transaction; nothing is stored.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy.orm import Session

from billing import invoice as inv
from billing.calendar import Month
from billing.planning import plan_close
from billing.snapshot import totals_as_json
from billing.tenant_fold import fold_tenant
from connector.config import BillingSettings
from connector.models import Tenant


def preview(session: Session, tenant: Tenant, now: dt.datetime) -> dict[str, Any]:
    """Fold the running month so far, as if it ended now: counts, totals, an invoice
    estimate. Not stored."""
    month = Month.containing(now, tenant.time_zone)
    inputs = plan_close(session, tenant, month, BillingSettings(), now, cutoff=now)
    totals: Counter[inv.Key] = Counter()
    counted = billable = 0
    reasons: Counter[str] = Counter()
    for chunk in fold_tenant(session, inputs):
        for decision, _, _ in chunk:
            inv.count([decision], totals)
            counted += 1
            billable += decision.billable
            reasons[decision.reason] += 1
    estimate = inv.make_invoice(totals, inputs.prices, inputs.non_profit, inputs.po_number)
    return {"tenantId": tenant.id, "month": str(month), "asOf": now.isoformat(),
            "policy": inputs.policy.name, "usersCounted": counted, "usersBillable": billable,
            "reasons": dict(sorted(reasons.items())), "totals": totals_as_json(totals),
            "invoice": estimate.as_json()}
