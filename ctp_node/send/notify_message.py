"""What a notification says: a JSON summary (webhooks) and a short e-mail, built from the
job's record when it is sent. They name the study by its UIDs and accession number, never the
patient."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ctp_node.send.notify_rules import is_notable
from ctp_node.store.models import NotificationEvent
from ctp_node.store.notifications import DueNotification

#: Summary volumes reported, as (name in the message, key in results.json, what it is).
_VOLUMES = (
    ("core", "core_ml", "rCBF < 30 % of normal"),
    ("hypoperfusion", "tmax6_ml", "Tmax > 6 s"),
    ("penumbra", "mismatch_ml", "mismatch: Tmax > 6 s minus core"),
    ("severe_hypoperfusion", "tmax10_ml", "Tmax > 10 s"),
)


@dataclass(frozen=True)
class MessageSettings:
    """What every message adds: the node's AE title, the console's address (None: no link)
    and the core volume (ml) from which a result is called a large core."""

    node: str
    console_url: str | None = None
    large_core_ml: float = 70.0
    include_patient_identity: bool = False


@dataclass(frozen=True)
class PatientIdentity:
    """The patient's name and ID from the series' header (``None``: not available, e.g. the
    received images were purged); only with ``notifications.include_patient_identity``."""

    name: str | None
    id: str | None


def notification_message(
    n: DueNotification, settings: MessageSettings, patient: PatientIdentity | None = None
) -> dict[str, Any]:
    """The JSON summary of a notification (what a webhook receives); with ``patient``, the
    patient's name and ID too."""
    summary = json.loads(n.summary_json) if n.summary_json else {}
    message: dict[str, Any] = {
        "event": n.event,
        "node": settings.node,
        "study_instance_uid": n.study_instance_uid,
        "series_instance_uid": n.series_instance_uid,
        "accession_number": n.accession_number,
        "job": n.job_id,
        "result_version": n.version or None,
        "console_url": settings.console_url,
    }
    if patient is not None:
        message["patient_name"] = patient.name
        message["patient_id"] = patient.id
    if n.event == NotificationEvent.RESULT:
        # A profile without stroke volumes has none: a vasospasm message names the maps its
        # hemispheric comparison flagged instead, a tumour message the enhancing region's
        # volume (a tumour study is not urgent: it does not make the result notable).
        message["profile"] = (summary.get("profile") or {}).get("name", "stroke")
        volumes = summary.get("volumes")
        message["volumes"] = volumes and {
            name: {"value": volumes.get(key), "unit": "ml", "meaning": meaning}
            for name, key, meaning in _VOLUMES
        }
        message["mismatch_ratio"] = (volumes or {}).get("mismatch_ratio")
        message["target_mismatch"] = bool((volumes or {}).get("target_mismatch"))
        message["large_core"] = ((volumes or {}).get("core_ml") or 0) >= settings.large_core_ml
        asymmetry = summary.get("asymmetry")
        message["asymmetry_flagged"] = asymmetry["flagged"] if asymmetry else None
        region = (summary.get("permeability") or {}).get("enhancing_region")
        message["enhancing_region_ml"] = region["volume_ml"] if region else None
        message["notable"] = is_notable(summary, settings.large_core_ml)
        message["qc_warnings"] = qc_warnings(summary)
    else:
        message["failure_reason"] = n.detail
    if n.event == NotificationEvent.EXPORT_FAILED:
        message["destination"] = n.destination
    return message


def qc_warnings(summary: dict[str, Any]) -> list[str]:
    """The engine's warnings and the acquisition quality checks that warned, one line each."""
    checks = [
        f"{finding['name']}: {finding.get('detail', '')}".rstrip(": ")
        for finding in summary.get("quality", [])
        if finding.get("result") == "warn"
    ]
    return [*summary.get("warnings", []), *checks]


def email_text(message: dict[str, Any]) -> tuple[str, str]:
    """The subject and the plain-text body of the e-mail for a message."""
    accession = message["accession_number"] or "no accession number"
    version = f" v{message['result_version']}" if message["result_version"] else ""
    lines = []
    if message["event"] == NotificationEvent.RESULT and not message["volumes"]:
        flagged = message.get("asymmetry_flagged")
        verdict = f"{', '.join(flagged)} asymmetric" if flagged else "no map asymmetric"
        subject = f"CT perfusion{version} ({message['profile']}), {accession}: {verdict}"
        lines += [f"flagged hemispheric asymmetry: {', '.join(flagged) if flagged else 'none'}"]
        lines += [f"QC warning: {w}" for w in message["qc_warnings"]] or ["QC: no warnings"]
    elif message["event"] == NotificationEvent.RESULT:
        volumes = message["volumes"]
        core, penumbra = volumes["core"]["value"], volumes["penumbra"]["value"]
        flags = [
            text
            for text, on in (
                ("TARGET MISMATCH", message["target_mismatch"]),
                ("LARGE CORE", message["large_core"]),
            )
            if on
        ]
        subject = f"CT perfusion{version}, {accession}: core {_ml(core)}, penumbra {_ml(penumbra)}"
        subject += f" ({', '.join(flags)})" if flags else ""
        lines += [
            f"{name.replace('_', ' ')} ({v['meaning']}): {_ml(v['value'])}"
            for name, v in volumes.items()
        ]
        lines.append(f"mismatch ratio: {message['mismatch_ratio']}")
        lines += [f"QC warning: {w}" for w in message["qc_warnings"]] or ["QC: no warnings"]
    elif message["event"] == NotificationEvent.FAILURE:
        subject = f"CT perfusion FAILED, {accession}"
        lines.append(f"No maps: {message['failure_reason']}")
    else:
        subject = f"CT perfusion not delivered to {message['destination']}, {accession}"
        lines.append(
            f"The node gave up sending result{version} to {message['destination']}: "
            f"{message['failure_reason']}"
        )
    if "patient_name" in message:
        who = (
            f"{message['patient_name'] or 'name not available'}, ID {message['patient_id'] or '-'}"
        )
        lines += ["", f"patient: {who}"]
    lines += [
        "",
        f"study {message['study_instance_uid']}",
        f"series {message['series_instance_uid']}",
        f"node {message['node']}, job {message['job']}",
    ]
    if message["console_url"]:
        lines.append(f"console: {message['console_url']}")
    return subject, "\n".join(lines) + "\n"


def _ml(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ml"
