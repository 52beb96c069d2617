"""One result as a table on the terminal (``ctp-node process`` and ``demo``): the profile, the
stroke volumes, the hemispheric comparison, the enhancing region and the maps' medians, each
with its unit, beside the truth when it is known."""

from __future__ import annotations

from pathlib import Path

from ctp_node.perfusion.result import DISPLAY_UNITS
from ctp_node.profiles import DEFAULT_PROFILE, PROFILES

#: The hypoperfusion intensity ratio's key in ``results.json``'s volumes and the truth.
HIR_KEY = "hypoperfusion_intensity_ratio"


def print_result(summary: dict, out: Path, truth: dict | None = None) -> None:
    """Print one series' profile, volumes (a profile with stroke volumes), hemispheric
    comparison and enhancing region (if any) and map medians as a table, each with its unit
    (with the truth, if known)."""
    volumes = summary["volumes"]
    profile = summary.get("profile") or {"name": DEFAULT_PROFILE, "chosen_by": "-"}
    stroke = PROFILES[profile["name"]].stroke_volumes
    rows = []
    if stroke:
        rows += [
            ("core (rCBF<30%)", "ml", volumes["core_ml"], "core_ml"),
            ("hypoperfusion (Tmax>6s)", "ml", volumes["tmax6_ml"], "tmax6_ml"),
            ("hypoperfusion (Tmax>10s)", "ml", volumes["tmax10_ml"], "tmax10_ml"),
            ("mismatch", "ml", volumes["mismatch_ml"], "mismatch_ml"),
            ("mismatch ratio", "ratio", volumes["mismatch_ratio"], "mismatch_ratio"),
            ("HIR", "ratio", volumes["hypoperfusion_intensity_ratio"], HIR_KEY),
        ]
    rows += _asymmetry_rows(summary.get("asymmetry"))
    rows += _permeability_rows(summary.get("permeability"))
    if summary.get("user_region"):
        rows += _region_rows("user", summary["user_region"])
    rows += [
        (f"median {name}", DISPLAY_UNITS.get(name, "?"), stats["median_in_tissue"], None)
        for name, stats in summary["maps"].items()
    ]
    print(f"\nseries {summary['series_instance_uid']}  ({summary['algorithm']})")
    print(f"  profile {profile['name']}, chosen by {profile['chosen_by']}")
    header = f"  {'quantity':<28}{'unit':<14}{'ctp-node':>10}"
    print(header + (f"{'truth':>10}" if truth else ""))
    for name, unit, value, key in rows:
        line = f"  {name:<28}{unit:<14}{_fmt(value):>10}"
        if truth and key:
            line += f"{_fmt(truth.get(key)):>10}"
        print(line)
    if stroke:
        target = "yes" if volumes["target_mismatch"] else "no"
        print(f"  {'target mismatch (DEFUSE 3)':<28}{'yes/no':<14}{target:>10}")
    print(
        f"  outputs: {len(summary['outputs'])} DICOM objects, results.json and summary.png in {out}"
    )


def _asymmetry_rows(asymmetry: dict | None) -> list[tuple[str, str, float | None, None]]:
    """Per compared map: each side's mean, and the difference (time maps) or ratio (flow
    maps), flagged maps marked with ``!``."""
    if not asymmetry:
        return []
    first, second = asymmetry["sides"]
    rows = []
    for name, item in asymmetry["maps"].items():
        unit = DISPLAY_UNITS.get(name, "?")
        mark = " !" if item["flagged"] else ""
        rows += [(f"{name} {s} mean", unit, item["mean"][s], None) for s in (first, second)]
        if unit == "s":
            rows.append((f"{name} {second} - {first}{mark}", "s", item["difference"], None))
        else:
            rows.append((f"{name} lower/higher{mark}", "ratio", item["ratio"], None))
    return rows


def _permeability_rows(permeability: dict | None) -> list[tuple[str, str, float | None, None]]:
    """The enhancing region's volume and each map's mean in it and outside it."""
    if not permeability:
        return []
    return _region_rows("enhancing", permeability["enhancing_region"])


def _region_rows(label: str, region: dict | None) -> list[tuple[str, str, float | None, None]]:
    """A region's volume (``label``: how the rows name it) and each map's mean in it and
    outside it."""
    if region is None:
        return [(f"{label} region (none)", "ml", 0.0, None)]
    rows = [(f"{label} region", "ml", region["volume_ml"], None)]
    for name, item in (region.get("maps") or {}).items():
        unit = DISPLAY_UNITS.get(name, "?")
        rows += [
            (f"{name} {label} mean", unit, item["mean"], None),
            (f"{name} outside mean", unit, item["outside_mean"], None),
        ]
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
