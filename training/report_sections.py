"""The report page's depth sections: weekly trends, supply by channel, age-band gaps, the glossary.

Each function returns an HTML fragment in the page's style (inline SVG, escaped data strings)
that :func:`training.report_html.render_report` places: the trends and supply sections after
the requests section, a district's supply and age-band gaps inside its section, the glossary
before the privacy notes. Only numbers that survived suppression reach this module.
"""

from __future__ import annotations

import logging
from html import escape
from typing import Any

import polars as pl

from training.report_html import category_label, percent, region_name, section_id, svg_open, text_width

log = logging.getLogger(__name__)

TREND_CATEGORIES = 5
"""Lines per district chart: its categories with the highest current share."""
PALETTE = ("#0f766e", "#c2410c", "#1d4ed8", "#a16207", "#7e22ce", "#be123c")

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "trends": "近 {n} 周趋势：各区 × 类别的参与率",
        "trends_note": "每周一次报告存档（reports/年-W周/）；折线为该区参与率最高的 {k} 个类别，"
                       "断点表示该周人数不足而隐藏。",
        "one_week": "目前只有一周的存档；下一周的报告起可以看到折线。",
        "supply": "供给：条目、场次、座位",
        "supply_note": "线下渠道按区统计：条目 = 不同节目（同一 series 的多场算一个条目），场次 = 内容条数，"
                       "座位 = 各场次容量之和（未填写容量的场次不计）。数字渠道不属于任何区，单独统计。",
        "channel_offline": "线下",
        "channel_digital": "数字渠道",
        "listings": "条目",
        "sessions": "场次",
        "seats": "座位",
        "category": "类别",
        "age_gaps": "年龄段缺口",
        "age_gaps_none": "没有人数足够且供给不足的年龄段。",
        "age_gap_line": "{age} · {category}：需求 {demand}，供给 {supply}",
        "glossary": "术语表（含公式）",
        "term": "术语",
        "meaning": "含义",
        "formula": "公式",
    },
    "en": {
        "trends": "The last {n} weeks: share by district × category",
        "trends_note": "One report archived per week (reports/<year>-W<week>/); lines are the district's {k} "
                       "categories with the highest share now; a break means the week was suppressed.",
        "one_week": "Only one week is archived so far; lines appear from next week's report on.",
        "supply": "Supply: listings, sessions, seats",
        "supply_note": "Offline supply per district: listings = distinct programmes (sessions sharing a series "
                       "count once), sessions = items, seats = summed capacity of the sessions stating one. The "
                       "digital channel belongs to no district and is counted on its own.",
        "channel_offline": "offline",
        "channel_digital": "digital channel",
        "listings": "listings",
        "sessions": "sessions",
        "seats": "seats",
        "category": "category",
        "age_gaps": "Gaps by age band",
        "age_gaps_none": "No age band with enough residents is undersupplied.",
        "age_gap_line": "{age} · {category}: demand {demand}, supply {supply}",
        "glossary": "Glossary (with formulas)",
        "term": "term",
        "meaning": "meaning",
        "formula": "formula",
    },
}

GLOSSARY: dict[str, list[tuple[str, str, str]]] = {
    "zh": [
        ("活跃用户", "窗口内至少有一次互动的居民", "active(s) = |{u ∈ s : u 在窗口内有互动}|"),
        ("参与率", "一个群体中参与过某类活动的人所占比例", "share(s, c) = 参与过 c 的活跃用户 ÷ active(s)"),
        ("提升度", "与全市相比，这个群体有多偏爱某类活动", "lift(s, c) = share(s, c) ÷ share(全市, c)"),
        ("需求占比", "居民的行为（按权重）有多少落在某类活动上", "d(r, c) = Σ 权重(r 区居民, c) ÷ Σ 权重(r 区居民)"),
        ("供给占比", "本区上线内容中某类所占比例（按条目）", "p(r, c) = 条目(r, c) ÷ 条目(r)"),
        ("缺口", "需求比供给多出多少；正数表示供不应求", "gap = d − p；供给不足：d ≥ 1.5p 且 d ≥ 5%"),
        ("条目 / 场次 / 座位", "同一节目算一个条目；每一场算一个场次；座位为各场容量之和",
         "listings = |不同 series|，sessions = |内容|，seats = Σ capacity"),
        ("数字渠道", "线上内容不属于任何区，单独统计，不再被排除", "digital(c) = 数字内容条目数"),
        ("年龄段缺口", "区内某一年龄段的需求与全区供给相比",
         "gap(r, a, c) = d(r 区 a 年龄段, c) − p(r, c)"),
        ("点单人数", "在窗口内为该类别或菜单节目点单的不同居民", "requesters(r, c) = |{u : u 点单 c}|"),
        ("点了却没有", "至少 k 人点单、但本区窗口内没有该类内容", "requesters ≥ k 且 条目(r, c) = 0"),
        ("响应天数", "从点单到出现匹配内容的天数（中位数）", "median(匹配内容开始时间 − 点单时间)"),
        ("周趋势", "每周报告存档后，同一单元格的参与率随周变化", "share_w(r, c)，w = 最近至多 12 周"),
        ("隐私门槛 k", "人数少于 k 的单元格不显示任何数字", "显示当且仅当 人数 ≥ k（--min-users）"),
    ],
    "en": [
        ("active users", "residents with at least one interaction in the window", "active(s) = |{u ∈ s : u acted}|"),
        ("share", "the part of a group that engaged with a category",
         "share(s, c) = active users of s engaged with c ÷ active(s)"),
        ("lift", "how much more a group favours a category than the city", "lift(s, c) = share(s, c) ÷ share(city, c)"),
        ("demand share", "the part of residents' weighted behaviour on a category",
         "d(r, c) = Σ weight(residents of r, c) ÷ Σ weight(residents of r)"),
        ("supply share", "the part of the district's live listings in a category",
         "p(r, c) = listings(r, c) ÷ listings(r)"),
        ("gap", "how far demand exceeds supply; positive means short",
         "gap = d − p; undersupplied: d ≥ 1.5p and d ≥ 5%"),
        ("listings / sessions / seats", "one programme is one listing; every date is a session; seats add capacity",
         "listings = |distinct series|, sessions = |items|, seats = Σ capacity"),
        ("digital channel", "online items belong to no district and are counted on their own",
         "digital(c) = digital listings"),
        ("age-band gap", "one age band's demand against the district's supply", "gap(r, a, c) = d(r, a, c) − p(r, c)"),
        ("requesters", "distinct residents asking for a category or menu programme in the window",
         "requesters(r, c) = |{u : u asked for c}|"),
        ("asked for, not offered", "at least k asked and nothing of the category was live in the district",
         "requesters ≥ k and listings(r, c) = 0"),
        ("days to an answer", "median days from a request to a matching item",
         "median(start of the matching item − request time)"),
        ("weekly trend", "a cell's share week by week, from the archived reports",
         "share_w(r, c), w = the last 12 weeks at most"),
        ("privacy threshold k", "cells resting on fewer than k residents show no number", "shown iff people ≥ k"),
    ],
}


def trends_section(history: pl.DataFrame, summary: dict[str, Any], lang: str) -> str:
    """One line chart per shown district: its leading categories' share, week by week."""
    text = TEXT[lang]
    weeks = sorted(history["week"].unique().to_list())
    parts = [f'<h2 id="trends">{escape(text["trends"].format(n=len(weeks)))}</h2>',
             f'<p class="note">{escape(text["trends_note"].format(k=TREND_CATEGORIES))}</p>']
    if len(weeks) < 2:
        parts.append(f'<p class="note">{escape(text["one_week"])}</p>')
    charts = []
    for code, block in summary["regions"].items():
        if block["suppressed"]:
            continue
        own = history.filter(pl.col("region_code") == code)
        lines = _leading_lines(own, weeks[-1], lang)
        if lines:
            name = region_name(code, lang)
            title = text["trends"].format(n=len(weeks))
            charts.append(f'<div class="trend" id="trend-{section_id(code)}"><h4>{escape(name)}</h4>'
                          f"{line_chart_svg(weeks, lines, label=f'{name} {title}')}</div>")
    parts.append(f'<div class="card cols">{"".join(charts)}</div>')
    return "".join(parts)


def _leading_lines(own: pl.DataFrame, week: str, lang: str) -> list[tuple[str, dict[str, float | None]]]:
    now = own.filter((pl.col("week") == week) & ~pl.col("suppressed")).sort(["share", "category"],
                                                                             descending=[True, False])
    lines = []
    for category in now["category"].head(TREND_CATEGORIES).to_list():
        rows = own.filter(pl.col("category") == category)
        points = {w: (None if hidden else s) for w, s, hidden in rows.select("week", "share", "suppressed").rows()}
        lines.append((category_label(category, lang), points))
    return lines


def line_chart_svg(weeks: list[str], lines: list[tuple[str, dict[str, float | None]]], *, label: str) -> str:
    """Weeks along x, share along y; one polyline per category (broken where a week is hidden), a
    circle per shown point with its value as a tooltip, the category names in a legend."""
    left, top, plot_w, plot_h = 44, 12, 300, 150
    legend_w = 16 + max([text_width(name, 11) for name, _ in lines] + [40])
    width, height = left + plot_w + 24 + legend_w, top + plot_h + 40
    high = max([v for _, points in lines for v in points.values() if v is not None] + [0.01])
    step = plot_w / max(len(weeks) - 1, 1)

    def xy(i: int, value: float) -> tuple[float, float]:
        return left + (i * step if len(weeks) > 1 else plot_w / 2), top + plot_h * (1 - value / high)

    parts = [svg_open(width, height, label),
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#9ca3af"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#9ca3af"/>',
             f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="legend">{percent(high)}</text>',
             f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class="legend">0</text>']
    for i, week in enumerate(weeks):
        x, _ = xy(i, 0.0)
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="legend">'
                     f'{escape(week[-3:])}</text>')
    for k, (name, points) in enumerate(lines):
        colour = PALETTE[k % len(PALETTE)]
        parts.append(f'<g class="series" data-category="{escape(name)}">')
        for run in _runs(weeks, points):
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in run))
            if len(run) > 1:
                parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, week in enumerate(weeks):
            value = points.get(week)
            if value is not None:
                x, y = xy(i, value)
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                             f"<title>{escape(f'{name} {week}: {percent(value)}')}</title></circle>")
        ly = top + 14 + k * 18
        parts.append(f'<rect x="{left + plot_w + 24}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + plot_w + 38}" y="{ly}" class="legend">{escape(name)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _runs(weeks: list[str], points: dict[str, float | None]) -> list[list[tuple[int, float]]]:
    """Consecutive shown weeks, as (position, value) runs: a hidden week breaks the line."""
    runs: list[list[tuple[int, float]]] = [[]]
    for i, week in enumerate(weeks):
        value = points.get(week)
        if value is None:
            runs.append([])
        else:
            runs[-1].append((i, value))
    return [run for run in runs if run]


def supply_section(supply: pl.DataFrame, lang: str) -> str:
    """City totals per category: offline listings, sessions and seats, and the digital channel."""
    text = TEXT[lang]
    offline = supply.filter(pl.col("channel") == "offline").group_by("category").agg(
        pl.col("listings", "sessions").sum(), pl.col("seats").sum())
    digital = supply.filter(pl.col("channel") == "digital").select("category", pl.col("listings").alias("digital"))
    table = offline.join(digital, on="category", how="full", coalesce=True).fill_null(0).sort(
        ["listings", "category"], descending=[True, False])
    heads = [text[k] for k in ("category", "listings", "sessions", "seats")] + [text["channel_digital"]]
    head = "".join(f"<th>{escape(h)}</th>" for h in heads)
    body = "".join(
        f'<tr><td>{escape(category_label(r["category"], lang))}</td>'
        + "".join(f'<td class="num">{int(r[c]):,}</td>' for c in ("listings", "sessions", "seats", "digital"))
        + "</tr>" for r in table.to_dicts())
    return (f'<h2 id="supply">{escape(text["supply"])}</h2><div class="card">'
            f'<p class="note">{escape(text["supply_note"])}</p>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def region_depth(code: str, supply: pl.DataFrame, gaps: pl.DataFrame, lang: str) -> str:
    """A district's supply by listings, sessions and seats, and its undersupplied age bands."""
    text = TEXT[lang]
    own = supply.filter((pl.col("channel") == "offline") & (pl.col("region_code") == code)).sort(
        ["listings", "category"], descending=[True, False])
    head = "".join(f"<th>{escape(text[k])}</th>" for k in ("category", "listings", "sessions", "seats"))
    body = "".join(
        f'<tr><td>{escape(category_label(r["category"], lang))}</td><td class="num">{int(r["listings"]):,}</td>'
        f'<td class="num">{int(r["sessions"]):,}</td><td class="num">{_count(r["seats"])}</td></tr>'
        for r in own.to_dicts())
    short = gaps.filter((pl.col("region_code") == code) & (pl.col("status") == "undersupplied")).sort(
        ["gap", "age_band", "category"], descending=[True, False, False]).head(5)
    lines = "".join(
        f'<li>{escape(text["age_gap_line"].format(age=r["age_band"], category=category_label(r["category"], lang), demand=percent(r["demand_share"]), supply=percent(r["supply_share"])))}</li>'  # noqa: E501
        for r in short.to_dicts()) or f'<li class="note">{escape(text["age_gaps_none"])}</li>'
    return (f'<div class="cols"><div><h4>{escape(text["supply"])}</h4>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            f'<div class="age-gaps"><h4>{escape(text["age_gaps"])}</h4><ul class="sentences">{lines}</ul></div></div>')


def _count(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def glossary_section(lang: str) -> str:
    """Every figure of the report in a planner's words, with its formula."""
    text = TEXT[lang]
    head = "".join(f"<th>{escape(text[k])}</th>" for k in ("term", "meaning", "formula"))
    body = "".join(f"<tr><td><b>{escape(term)}</b></td><td>{escape(meaning)}</td><td><code>{escape(formula)}</code>"
                   "</td></tr>" for term, meaning, formula in GLOSSARY[lang])
    return (f'<h2 id="glossary">{escape(text["glossary"])}</h2><div class="card">'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def depth_sections(depth: dict[str, pl.DataFrame], summary: dict[str, Any], lang: str) -> dict[str, str]:
    """The fragments :func:`training.report_html.render_report` places, by where they go."""
    sections = {"after_requests": trends_section(depth["weekly_trends"], summary, lang)
                + supply_section(depth["supply"], lang),
                "glossary": glossary_section(lang)}
    for code, block in summary["regions"].items():
        if not block["suppressed"]:
            sections[f"region:{code}"] = region_depth(code, depth["supply"], depth["age_gaps"], lang)
    return sections
