"""Retention: deleting received instances, results and quarantined files once they are no
longer needed, and never before.

- :mod:`~ctp_node.retention.rules`: when a series' spool and a job's results are due;
- :mod:`~ctp_node.retention.plan`: what would be deleted now (reads only; ``--dry-run``);
- :mod:`~ctp_node.retention.apply`: deleting it, files first, then their records;
- :mod:`~ctp_node.retention.disk`: what the folders below ``storage.root`` take on disk;
- :mod:`~ctp_node.retention.purge`: the ``ctp-node purge`` command.
"""

from ctp_node.retention.apply import apply_due_retention, apply_retention
from ctp_node.retention.disk import DiskUsage, measure_disk
from ctp_node.retention.plan import CATEGORIES, Freed, RetentionPlan, plan_retention
from ctp_node.retention.rules import RetentionPolicy, retention_policy

__all__ = [
    "CATEGORIES",
    "DiskUsage",
    "Freed",
    "RetentionPlan",
    "RetentionPolicy",
    "apply_due_retention",
    "apply_retention",
    "measure_disk",
    "plan_retention",
    "retention_policy",
]
