"""Re-verify a closed month: fold it again from its frozen inputs and hash the result.

A closed month's hash (billing.snapshot) covers its inputs and its lines; folding the
month again from the same inputs and the same logs must give the same hash. The bench
and the tests check every close this way, from the whole log or from kept states.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from billing.planning import inputs_of
from billing.snapshot import LineTally, digest_of, snapshot_digest, tally
from billing.tenant_fold import fold_tenant
from connector.models import BillingClose


def recompute_hash(session: Session, close: BillingClose, carry: bool = False) -> str:
    """Fold the closed month again from its frozen inputs (from the beginning of the
    log, unless `carry`): the hash it had, if nothing it was computed from changed."""
    inputs = inputs_of(close)
    digest = snapshot_digest(inputs, close)
    lines = LineTally()
    for chunk in fold_tenant(session, inputs, carry=carry):
        lines.add(tally(chunk))
    return digest_of(digest, lines)
