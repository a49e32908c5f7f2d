"""The duplicates part of a selection's report: what was left out, and the budget against both pools.

Input is the `dedup` summary selection stores beside a subset (groups, samples removed, per source,
examples); output is a JSON-ready section, its Markdown for the Dagster UI and its HTML for the page.
"""

from __future__ import annotations


def dedup_section(dedup: dict | None, pool_size: int, selected: int) -> dict | None:
    """None when the selection was made without deduplication."""
    if not dedup:
        return None
    dd = int(dedup.get("deduplicated_pool_size") or pool_size)
    return {
        "groups": int(dedup.get("groups", 0)),
        "exact_groups": int(dedup.get("exact_groups", 0)),
        "near_groups": int(dedup.get("near_groups", 0)),
        "removed": int(dedup.get("removed", 0)),
        "pool_size": pool_size,
        "deduplicated_pool_size": dd,
        "fraction_of_pool": selected / pool_size if pool_size else 0.0,
        "fraction_of_deduplicated_pool": selected / dd if dd else 0.0,
        "per_source": list(dedup.get("per_source", [])),
        "examples": list(dedup.get("examples", [])),
    }


def dedup_markdown(section: dict | None) -> str:
    if not section:
        return (
            "**Duplicates**: no removal recorded for this selection (`dedup = false`, or selected without duplicates)."
        )
    s = section
    lines = [
        f"**Duplicates**: {s['removed']:,} samples in {s['groups']:,} groups left out ({s['exact_groups']:,} exact, "
        f"{s['near_groups']:,} near); the subset is {100 * s['fraction_of_pool']:.2f}% of the {s['pool_size']:,} "
        f"scored samples and {100 * s['fraction_of_deduplicated_pool']:.2f}% of the {s['deduplicated_pool_size']:,} "
        "left after deduplication.",
        "",
        "| source | groups | samples in groups | left out |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['source']} | {r['groups']:,} | {r['in_groups']:,} | {r['removed']:,} |" for r in s["per_source"]]
    return "\n".join(lines)


def dedup_html(section: dict | None) -> str:
    from mmssr_core.report_html import esc, fmt, table

    if not section:
        return (
            '<h2>Duplicates</h2><p class="muted">No removal recorded for this selection (dedup = false, '
            "or selected without duplicate groups).</p>"
        )
    s = section
    parts = [
        "<h2>Duplicates</h2>",
        f"<p>{esc(fmt(s['removed']))} samples in {esc(fmt(s['groups']))} duplicate groups were left out "
        f"({esc(fmt(s['exact_groups']))} exact, {esc(fmt(s['near_groups']))} near); each group kept its best-scored "
        f"member. The subset is {esc(fmt(100 * s['fraction_of_pool'], 2))}% of the {esc(fmt(s['pool_size']))} scored "
        f"samples and {esc(fmt(100 * s['fraction_of_deduplicated_pool'], 2))}% of the "
        f"{esc(fmt(s['deduplicated_pool_size']))} left after deduplication.</p>",
        table(
            ["source", "groups", "samples in groups", "left out"],
            [[r["source"], r["groups"], r["in_groups"], r["removed"]] for r in s["per_source"]],
        ),
    ]
    if s["examples"]:
        rows = [
            [e["kind"], e["kept"], ", ".join(e["removed"][:5]) + (" …" if len(e["removed"]) > 5 else "")]
            for e in s["examples"]
        ]
        parts += ["<h3>Largest groups</h3>", table(["kind", "kept", "left out"], rows, left_cols=3)]
    return "\n".join(parts)


def dedup_metrics(section: dict | None) -> dict[str, float]:
    if not section:
        return {}
    return {
        "duplicates_removed": float(section["removed"]),
        "duplicate_groups": float(section["groups"]),
        "deduplicated_pool_size": float(section["deduplicated_pool_size"]),
        "fraction_of_deduplicated_pool": float(section["fraction_of_deduplicated_pool"]),
    }
