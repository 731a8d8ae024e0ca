"""The online report as one self-contained HTML page, in the planners' report's style.

One table of totals per model version x variant, then one per segment type (all days
summed per cell would hide a trend, so the cells stay per day). Every data string passes
through :func:`html.escape`: versions, districts and age bands come from outside.
"""

from __future__ import annotations

from html import escape
from typing import Any

from recsys.attribution import SEGMENT_TYPES
from training.report_html import CSS

COLUMNS = (("lists", "lists"), ("impressions", "impressions"), ("click_through", "click-through"),
           ("reservations_per_1000", "reservations / 1,000 lists"), ("attendance_per_1000", "attendance / 1,000 lists"),
           ("catalogue_share", "catalogue shown"), ("rural_slot_share", "rural slots"),
           ("fallback_rate", "fallback"), ("empty_rate", "empty"))
SHARES = {"click_through", "catalogue_share", "rural_slot_share", "fallback_rate", "empty_rate"}


def cell(key: str, value: Any) -> str:
    if value is None:
        return '<td class="num">–</td>'
    if key in SHARES:
        return f'<td class="num">{float(value):.2%}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:.1f}</td>'
    return f'<td class="num">{escape(str(value))}</td>'


def table(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    if not rows:
        return '<p class="note">no lists in this window</p>'
    head = "".join(f"<th>{escape(k)}</th>" for k in keys) + "".join(f"<th>{escape(t)}</th>" for _, t in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(r.get(k)))}</td>" for k in keys)
                   + "".join(cell(c, r.get(c)) for c, _ in COLUMNS) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_online(summary: dict[str, Any]) -> str:
    """The page for a ``summary.json`` document (:mod:`training.online_report`)."""
    cells = summary.get("cells", [])
    sections = []
    for segment_type in SEGMENT_TYPES:
        rows = [c for c in cells if c.get("segment_type") == segment_type]
        sections.append(f'<h2 id="{segment_type}">by {escape(segment_type)}</h2><div class="card">'
                        + table(rows, ("day", "model_version", "variant", "segment")) + "</div>")
    days = [c for c in cells if c.get("segment_type") == "all"]
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Online metrics</title><style>{CSS}</style></head><body><main>"
            f"<h1>Online metrics</h1><p class=\"sub\">{escape(str(summary.get('window_start')))} .. "
            f"{escape(str(summary.get('window_end')))} ({summary.get('days')} days), generated "
            f"{escape(str(summary.get('generated_at')))}</p>"
            '<p class="note">click-through = clicks attributed to a list / slots shown; a list counts as shown '
            "unless the app posts impressions for it.</p>"
            '<h2 id="totals">per model version and variant</h2><div class="card">'
            + table(summary.get("totals", []), ("model_version", "variant")) + "</div>"
            '<h2 id="days">per day</h2><div class="card">'
            + table(days, ("day", "model_version", "variant")) + "</div>"
            + "".join(sections) + "</main></body></html>")
