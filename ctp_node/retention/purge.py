"""``ctp-node purge``: what retention would free now, and (without ``--dry-run``) freeing it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from ctp_node.config import Config, database_password
from ctp_node.retention.apply import apply_retention
from ctp_node.retention.plan import CATEGORIES, Freed, RetentionPlan, plan_retention
from ctp_node.retention.rules import RetentionPolicy, retention_policy
from ctp_node.store import open_database
from ctp_node.store.models import utcnow

#: Undelivered or unprocessed things listed one by one; beyond that, counted.
HELD_LISTED = 20


def purge(config: Config, *, dry_run: bool) -> int:
    """Print the plan, apply it unless ``dry_run``, print what was freed. Returns 0."""
    policy = retention_policy(config)
    root = Path(config.storage.root)
    db = open_database(config.database.url, database_password(config.database), must_exist=True)
    try:
        plan = plan_retention(db, root, policy, utcnow())
        print(f"retention at {plan.now.isoformat(timespec='seconds')}Z ({_describe(policy)})")
        print("due now:")
        _print_table(plan.totals())
        _print_kept(plan)
        if dry_run:
            print("dry run: nothing was deleted")
            return 0
        freed = apply_retention(db, root, plan)
    finally:
        db.dispose()
    print("freed:")
    _print_table(freed)
    return 0


def _describe(policy: RetentionPolicy) -> str:
    def days(value: float | None) -> str:
        return "for ever" if value is None else f"{value:g} d"

    cap = policy.quarantine_max_bytes
    size = "no size limit" if cap is None else f"at most {cap / 1e6:g} MB"
    return (
        f"spool {days(policy.spool_days)}, results {days(policy.results_days)}, "
        f"quarantine {days(policy.quarantine_days)} and {size}"
    )


def _print_table(totals: Mapping[str, Freed]) -> None:
    for name, freed in totals.items():
        print(
            f"  {name:<11}{freed.items:>7} {CATEGORIES[name]:<8}{freed.files:>8} files"
            f"{freed.bytes / 1e6:>11.1f} MB"
        )
    files = sum(f.files for f in totals.values())
    size = sum(f.bytes for f in totals.values())
    print(f"  {'total':<27}{files:>8} files{size / 1e6:>11.1f} MB")


def _print_kept(plan: RetentionPlan) -> None:
    young = Counter(k.category for k in plan.kept if not k.held)
    held = [k for k in plan.kept if k.held]
    if young:
        counts = ", ".join(f"{name} {n}" for name, n in sorted(young.items()))
        print(f"kept, not old enough yet: {counts}")
    if held:
        print(f"kept whatever the clock says (undelivered or unprocessed): {len(held)}")
        for item in held[:HELD_LISTED]:
            print(f"  {item.category} {item.subject}: {item.reason}")
        if len(held) > HELD_LISTED:
            print(f"  ... and {len(held) - HELD_LISTED} more")
