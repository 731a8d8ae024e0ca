"""The planners' report as one self-contained HTML page (inline SVG charts; zh or en).

The page opens offline: no script, no stylesheet or font from elsewhere, every chart an
inline ``<svg>``. Every data string (region codes, categories, titles, age bands) passes
through :func:`html.escape` because providers control them. Only numbers that survived
suppression reach this module, so nothing here needs to know the privacy rule beyond
saying so in the text.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from features.aggregates import ReportTables

LANGS: tuple[str, ...] = ("zh", "en")

REGION_NAMES: dict[str, tuple[str, str]] = {
    "110101": ("东城区", "Dongcheng"),
    "110102": ("西城区", "Xicheng"),
    "110105": ("朝阳区", "Chaoyang"),
    "110106": ("丰台区", "Fengtai"),
    "110107": ("石景山区", "Shijingshan"),
    "110108": ("海淀区", "Haidian"),
    "110109": ("门头沟区", "Mentougou"),
    "110111": ("房山区", "Fangshan"),
    "110112": ("通州区", "Tongzhou"),
    "110113": ("顺义区", "Shunyi"),
    "110114": ("昌平区", "Changping"),
    "110115": ("大兴区", "Daxing"),
    "110116": ("怀柔区", "Huairou"),
    "110117": ("平谷区", "Pinggu"),
    "110118": ("密云区", "Miyun"),
    "110119": ("延庆区", "Yanqing"),
}
"""Beijing districts by GB/T 2260 code (Chinese, English)."""

CATEGORY_LABELS: dict[str, tuple[str, str]] = {
    "opera": ("戏曲", "opera"),
    "xiqu": ("戏曲", "opera"),
    "music": ("音乐", "music"),
    "concert": ("音乐会", "concert"),
    "theater": ("话剧", "theatre"),
    "theatre": ("话剧", "theatre"),
    "drama": ("话剧", "drama"),
    "dance": ("舞蹈", "dance"),
    "exhibition": ("展览", "exhibition"),
    "museum": ("博物馆", "museum"),
    "art": ("美术", "art"),
    "calligraphy": ("书画", "calligraphy"),
    "lecture": ("讲座", "lecture"),
    "reading": ("阅读", "reading"),
    "book": ("图书", "books"),
    "books": ("图书", "books"),
    "library": ("图书馆", "library"),
    "film": ("电影", "film"),
    "movie": ("电影", "film"),
    "video": ("视频", "video"),
    "heritage": ("非遗", "intangible heritage"),
    "intangible_heritage": ("非遗", "intangible heritage"),
    "folk": ("民俗", "folk culture"),
    "kids": ("亲子", "family"),
    "family": ("亲子", "family"),
    "children": ("少儿", "children"),
    "training": ("培训", "training"),
    "course": ("课程", "courses"),
    "sports": ("体育", "sports"),
    "fitness": ("健身", "fitness"),
    "science": ("科普", "science"),
    "photography": ("摄影", "photography"),
    "uncategorized": ("未分类", "uncategorized"),
    "戏曲": ("戏曲", "opera"),
    "音乐": ("音乐", "music"),
    "舞蹈": ("舞蹈", "dance"),
    "话剧": ("话剧", "theatre"),
    "讲座": ("讲座", "lectures"),
    "非遗": ("非遗", "intangible heritage"),
    "亲子": ("亲子", "family"),
    "数字艺术": ("数字艺术", "digital art"),
    "书画": ("书画", "calligraphy & painting"),
    "摄影": ("摄影", "photography"),
    "电影": ("电影", "film"),
    "阅读": ("阅读", "reading"),
    "展览": ("展览", "exhibition"),
    "图书": ("图书", "books"),
}
"""Display names of common category keys (English or Chinese); any other category is shown as stored."""

AREA_LABELS: dict[str, tuple[str, str]] = {"urban": ("城区", "urban"), "rural": ("农村", "rural")}

FONT_STACK = ('system-ui, -apple-system, "Segoe UI", "PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", '
              '"Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei", sans-serif')

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title": "群众点菜 · 文化需求感知报告",
        "window": "统计窗口：{start} 至 {end}（{days} 天，{tz}）",
        "generated": "生成时间：{at}",
        "end_latest": "窗口截止于数据中最新一次互动的时间，因此对历史数据也能得到有意义的报告。",
        "end_given": "窗口截止于指定的时间。",
        "left_out": "入库时标记为疑似刷量（投毒）的互动不计入本报告：上一窗口开始以来共 {n} 条{reasons}。",
        "kpi_active": "活跃用户",
        "kpi_regions": "区",
        "kpi_under": "供给不足的 区×类别",
        "kpi_over": "供给过剩的 区×类别",
        "highlights": "要点",
        "overview": "总览：各区 × 类别的提升度",
        "overview_note": "颜色表示提升度（该区参与率 ÷ 全市参与率）：橙色高于全市平均，蓝色低于；"
                         "灰色为已隐藏（人数不足）。",
        "areas": "城乡 × 年龄段 × 类别的提升度",
        "regions": "分区详情",
        "active_in_region": "窗口内活跃用户 {n} 人",
        "suppressed_region": "该区窗口内活跃用户不足 {k} 人，为保护隐私，本节不显示任何数字。",
        "top_categories": "最具特色的类别（按提升度）",
        "groups": "突出的年龄群体",
        "no_groups": "没有提升度达到 1.5 倍且人数足够的年龄群体。",
        "sentence_region": "{region}用户中有 {share} 参与过{category}，是全市平均的 {lift} 倍",
        "sentence_group": "{region} {age} 用户中有 {share} 参与过{category}，是全市平均的 {lift} 倍",
        "sentence_area": "{area} {age} 用户中有 {share} 参与过{category}，是全市平均的 {lift} 倍",
        "supply_demand": "供需对比",
        "supply_demand_note": "需求占比：本区用户按行为加权的互动中各类别所占比例；"
                              "供给占比：位于本区、窗口内上线的内容中各类别所占比例。",
        "demand": "需求占比",
        "supply": "供给占比",
        "under": "供给不足",
        "over": "供给过剩",
        "demand_hidden": "需求已隐藏",
        "trend": "较上一个 {days} 天窗口的变化",
        "trend_note": "参与率变化（百分点）；— 表示人数不足而隐藏。",
        "top_items": "最受欢迎的内容",
        "no_items": "没有被至少 {k} 名本区用户参与的内容。",
        "rank": "名次",
        "item": "内容",
        "category": "类别",
        "users": "参与人数",
        "suppressed_cell": "已隐藏（人数不足）",
        "definitions": "指标定义",
        "privacy": "隐私保护",
        "times": "{x} 倍",
        "pp": "{x} 个百分点",
        "contents": "目录",
        "city_average": "全市",
        "requests": "点单：群众要什么",
        "requests_note": "居民点单（按类别或菜单节目）与行为参与、实际供给并列；“点了却没有”指至少 {k} 名居民点单、"
                         "但本区窗口内没有该类别内容上线。人数不足 {k} 人的点单不显示。",
        "asked_not_offered": "点了却没有",
        "requested": "点单人数",
        "engaged": "参与人数",
        "supplied": "供给（条）",
        "programmes": "点单最多的菜单节目",
        "answers": "点单响应：{answered}/{requests} 条已有匹配内容，中位响应 {days} 天",
        "no_requests": "没有达到 {k} 人的点单。",
    },
    "en": {
        "title": "Demand perception report for cultural planners",
        "window": "Window: {start} to {end} ({days} days, {tz})",
        "generated": "Generated: {at}",
        "end_latest": "The window ends at the latest interaction in the data, so reports on historical data "
                      "describe its last weeks.",
        "end_given": "The window ends at the time given.",
        "left_out": "Interactions flagged at ingest as likely poisoning are left out of this report: {n} since the "
                    "previous window's start{reasons}.",
        "kpi_active": "active users",
        "kpi_regions": "districts",
        "kpi_under": "undersupplied district × category",
        "kpi_over": "oversupplied district × category",
        "highlights": "Highlights",
        "overview": "Overview: lift by district × category",
        "overview_note": "Colour shows lift (district share ÷ city share): orange above the city average, blue "
                         "below; grey cells are suppressed (too few users).",
        "areas": "Lift by area type × age band × category",
        "regions": "Districts",
        "active_in_region": "{n} active users in the window",
        "suppressed_region": "Fewer than {k} active users in the window: to protect privacy this section "
                             "shows no numbers.",
        "top_categories": "Most distinctive categories (by lift)",
        "groups": "Stand-out age groups",
        "no_groups": "No age group reaches a lift of 1.5 with enough users.",
        "sentence_region": "{share} of {region} users engaged with {category}, {lift} the city average",
        "sentence_group": "{share} of {region} users aged {age} engaged with {category}, {lift} the city average",
        "sentence_area": "{share} of {area} users aged {age} engaged with {category}, {lift} the city average",
        "supply_demand": "Supply vs demand",
        "supply_demand_note": "Demand share: each category's part of this district's action-weighted "
                              "interactions; supply share: its part of the items located here and live in "
                              "the window.",
        "demand": "demand share",
        "supply": "supply share",
        "under": "undersupplied",
        "over": "oversupplied",
        "demand_hidden": "demand suppressed",
        "trend": "Change against the previous {days}-day window",
        "trend_note": "Change of share in percentage points; — means suppressed (too few users).",
        "top_items": "Most engaged items",
        "no_items": "No item was engaged by at least {k} users of this district.",
        "rank": "#",
        "item": "item",
        "category": "category",
        "users": "users",
        "suppressed_cell": "suppressed (too few users)",
        "definitions": "Definitions",
        "privacy": "Privacy",
        "times": "{x}×",
        "pp": "{x} pp",
        "contents": "Contents",
        "city_average": "city",
        "requests": "Requests (点单): what residents ask for",
        "requests_note": "Residents' requests (by category or menu programme) next to behaviour and supply; "
                         "'asked for, not offered' means at least {k} residents asked and nothing of the "
                         "category was live in the district in the window. Requests of fewer than {k} "
                         "residents are not shown.",
        "asked_not_offered": "asked for, not offered",
        "requested": "requesters",
        "engaged": "engaged users",
        "supplied": "items supplied",
        "programmes": "Most requested menu programmes",
        "answers": "Responsiveness: {answered}/{requests} requests have a matching item; median {days} days",
        "no_requests": "No request reached {k} residents.",
    },
}

DEFINITIONS: dict[str, list[str]] = {
    "zh": [
        "统计窗口为 (截止时间 − {days} 天, 截止时间]。{end_rule}",
        "分群 s：一个区；区 × 年龄段；城乡类型 × 年龄段。类别 c：内容的类别。",
        "活跃用户：分群 s 中在窗口内至少有一次互动的用户。",
        "参与率 share(s, c) = 分群 s 中与类别 c 的内容至少互动过一次的活跃用户数 ÷ 分群 s 的活跃用户数。",
        "提升度 lift(s, c) = share(s, c) ÷ share(全市, c)；大于 1 表示该分群比全市平均更偏好该类别。",
        "需求占比 d(r, c) = r 区用户对类别 c 的按行为加权的互动量 ÷ r 区用户的全部加权互动量。"
        "行为权重：{weights}；评分（rate）的权重 = 分值 × {rate}。",
        "供给占比 p(r, c) = 位于 r 区且在窗口内上线（开始时间 ≤ 窗口结束，且结束时间为空或 ≥ 窗口开始；"
        "无开始时间的内容视为常设）的 c 类内容数 ÷ r 区所有此类内容数。没有区域的内容（如数字资源）不计入供给。",
        "缺口 gap = d − p。供给不足：d ≥ 1.5 p 且 d ≥ 5%；供给过剩：p ≥ 1.5 d 且 p ≥ 5%；其余为基本平衡。",
        "趋势 = 本窗口的 share(s, c) − 上一个同长度窗口的 share(s, c)，单位为百分点。",
        "完全相同的重复互动只计一次。",
    ],
    "en": [
        "The window is (end − {days} days, end]. {end_rule}",
        "Segment s: a district; district × age band; area type × age band. Category c: an item's category.",
        "Active users of s: users in s with at least one interaction in the window.",
        "share(s, c) = active users of s with at least one interaction on an item of category c ÷ active "
        "users of s.",
        "lift(s, c) = share(s, c) ÷ share(city, c); above 1 means the segment favours c more than the city.",
        "Demand share d(r, c) = action-weighted interactions by users of district r on category c ÷ all "
        "action-weighted interactions by users of r. Action weights: {weights}; a rating weighs its value × "
        "{rate}.",
        "Supply share p(r, c) = items of category c located in r and live during the window (starts_at ≤ "
        "window end and ends_at empty or ≥ window start; items without a start count as standing) ÷ all such "
        "items in r. Items without a district (e.g. digital) are left out of supply.",
        "gap = d − p. Undersupplied: d ≥ 1.5 p and d ≥ 5%; oversupplied: p ≥ 1.5 d and p ≥ 5%; otherwise "
        "balanced.",
        "Trend = share(s, c) in this window − share(s, c) in the previous window of the same length, in "
        "percentage points.",
        "Exact duplicate interactions count once.",
    ],
}

PRIVACY: dict[str, list[str]] = {
    "zh": [
        "任何依据少于 {k} 名不同用户得出的单元格都被隐藏：不显示参与率、提升度或人数"
        "（文件中为空值，并标记 suppressed）。",
        "窗口内活跃用户少于 {k} 人的分群整体隐藏。趋势在本窗口或上一窗口任一被隐藏时也隐藏。",
        "“最受欢迎的内容”只列出至少 {k} 名本区用户参与过的内容。",
        "供给数字描述的是内容目录而非个人，因此在需求被隐藏时仍然显示。",
        "已隐藏（下架）的内容不参与任何统计；已申请删除的用户不计入。",
    ],
    "en": [
        "Any cell resting on fewer than {k} distinct users is suppressed: no share, no lift, no count (null "
        "values and a suppressed flag in the files).",
        "A segment with fewer than {k} active users is suppressed entirely. A trend is suppressed when "
        "either window's share is.",
        "'Most engaged items' lists only items engaged by at least {k} users of the district.",
        "Supply figures describe the catalog, not people, so they stay visible where demand is suppressed.",
        "Hidden items are excluded from everything; erased users are not counted.",
    ],
}


def region_name(code: str | None, lang: str = "zh") -> str:
    """The district's name in ``lang``; an unknown code is shown as the code itself."""
    if code is None:
        return "—"
    names = REGION_NAMES.get(code)
    return code if names is None else names[LANGS.index(lang)]


def category_label(category: str | None, lang: str = "zh") -> str:
    if category is None:
        return "—"
    labels = CATEGORY_LABELS.get(category.lower())
    return category if labels is None else labels[LANGS.index(lang)]


def area_label(area: str | None, lang: str = "zh") -> str:
    labels = AREA_LABELS.get(area or "")
    return (area or "—") if labels is None else labels[LANGS.index(lang)]


def percent(share: float) -> str:
    """A share as a percentage: whole numbers from 10%, one decimal below."""
    value = share * 100.0
    return f"{value:.0f}%" if value >= 10 else f"{value:.1f}%"


def signed(value: float) -> str:
    return f"{value:+.1f}"


def section_id(code: str) -> str:
    """An HTML id for a region's section (codes come from providers, so keep it to safe chars)."""
    return "region-" + re.sub(r"[^0-9A-Za-z_-]", "_", code)


# --------------------------------------------------------------------------- charts


def _lift_colour(lift: float) -> tuple[str, str]:
    """Fill and text colour: white at lift 1, orange above, blue below (log scale, saturating at 3x)."""
    t = max(-1.0, min(1.0, math.log2(max(lift, 1e-6)) / math.log2(3.0)))
    base, hot, cold = (247, 247, 247), (194, 65, 12), (29, 78, 216)
    target = hot if t > 0 else cold
    rgb = tuple(round(b + (c - b) * abs(t)) for b, c in zip(base, target, strict=True))
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})", ("#fff" if abs(t) > 0.55 else "#1f2937")


def text_width(value: str, size: float = 12.0) -> float:
    """Rough rendered width of ``value``: CJK glyphs are square, Latin ones about 0.6 em."""
    return sum(size if ord(ch) >= 0x2E80 else size * 0.6 for ch in value)


def heatmap_svg(rows: list[tuple[str, str]], columns: list[tuple[str, str]],
                cells: dict[tuple[str, str], dict[str, Any]], *, text: dict[str, str], label: str) -> str:
    """Rows x columns of lift cells; a missing or suppressed cell is grey with a dash.

    Column labels too wide for a cell are slanted, and the top margin grows to fit them.
    """
    cell_w, cell_h = 70, 26
    left = 16 + max([text_width(r) for _, r in rows] + [60])
    widest = max([text_width(c) for _, c in columns] + [0])
    slanted = widest > cell_w - 6
    top = 30 + (int(widest * 0.6) if slanted else 0)
    width = left + cell_w * max(len(columns), 1) + (widest * 0.8 if slanted else 8)
    height = top + cell_h * max(len(rows), 1) + 44
    parts = [svg_open(width, height, label)]
    for j, (_, col_label) in enumerate(columns):
        x, y = left + j * cell_w + cell_w / 2, top - 10
        placement = (f'text-anchor="start" transform="rotate(-35 {x:.0f} {y})"' if slanted
                     else 'text-anchor="middle"')
        parts.append(f'<text x="{x:.0f}" y="{y}" {placement} class="axis">{escape(col_label)}</text>')
    for i, (row_key, row_label) in enumerate(rows):
        y = top + i * cell_h
        parts.append(f'<text x="{left - 8}" y="{y + cell_h / 2 + 4:.0f}" text-anchor="end" class="axis">'
                     f'{escape(row_label)}</text>')
        for j, (col_key, col_label) in enumerate(columns):
            parts.append(_heat_cell(left + j * cell_w, y, cell_w, cell_h, cells.get((row_key, col_key)),
                                    f"{row_label} · {col_label}", text))
    parts.append(_heat_legend(left, top + cell_h * len(rows) + 14, text))
    parts.append("</svg>")
    return "".join(parts)


def _heat_cell(x: float, y: float, w: float, h: float, cell: dict[str, Any] | None, where: str,
               text: dict[str, str]) -> str:
    if cell is None or cell.get("lift") is None:
        tip = f"{where}: {text['suppressed_cell']}"
        return (f'<g><title>{escape(tip)}</title><rect x="{x}" y="{y}" width="{w - 2}" height="{h - 2}" '
                f'fill="#e5e7eb"/><text x="{x + w / 2 - 1:.0f}" y="{y + h / 2 + 3:.0f}" text-anchor="middle" '
                f'class="cell" fill="#9ca3af">—</text></g>')
    lift = float(cell["lift"])
    fill, ink = _lift_colour(lift)
    tip = f"{where}: lift {lift:.2f}, share {percent(cell['share'])}, n={cell['users']}"
    return (f'<g><title>{escape(tip)}</title><rect x="{x}" y="{y}" width="{w - 2}" height="{h - 2}" '
            f'fill="{fill}"/><text x="{x + w / 2 - 1:.0f}" y="{y + h / 2 + 3:.0f}" text-anchor="middle" '
            f'class="cell" fill="{ink}">{lift:.1f}×</text></g>')


def _heat_legend(x: float, y: float, text: dict[str, str]) -> str:
    stops = (0.33, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
    parts = []
    for k, lift in enumerate(stops):
        fill, ink = _lift_colour(lift)
        parts.append(f'<rect x="{x + k * 44}" y="{y}" width="42" height="16" fill="{fill}"/>'
                     f'<text x="{x + k * 44 + 21}" y="{y + 12}" text-anchor="middle" class="legend" '
                     f'fill="{ink}">{lift:g}×</text>')
    gx = x + len(stops) * 44 + 12
    parts.append(f'<rect x="{gx}" y="{y}" width="42" height="16" fill="#e5e7eb"/>'
                 f'<text x="{gx + 50}" y="{y + 12}" class="legend">{escape(text["suppressed_cell"])}</text>')
    return "".join(parts)


def supply_demand_svg(rows: list[dict[str, Any]], *, text: dict[str, str], label: str) -> str:
    """Two bars per category (demand, supply), under/oversupplied categories marked."""
    left = 14 + max([text_width(r["label"]) for r in rows] + [48])
    tag = 24 + max(text_width(text["under"]), text_width(text["over"]))
    top, bar_w, row_h = 34, 250, 34
    width, height = left + bar_w + 48 + tag, top + row_h * max(len(rows), 1) + 8
    scale = max([r["demand_share"] or 0.0 for r in rows] + [r["supply_share"] or 0.0 for r in rows] + [0.05])
    parts = [svg_open(width, height, label), _bar_legend(left, text)]
    for i, row in enumerate(rows):
        y = top + i * row_h
        parts.append(f'<text x="{left - 8}" y="{y + 17}" text-anchor="end" class="axis">'
                     f'{escape(row["label"])}</text>')
        parts.append(_share_bar(left, y + 3, row["demand_share"], scale, bar_w, "#0f766e", text))
        parts.append(_share_bar(left, y + 17, row["supply_share"], scale, bar_w, "#d6a354", text))
        parts.append(_status_tag(left + bar_w + 48, y + 17, row.get("status"), text))
    parts.append("</svg>")
    return "".join(parts)


def _bar_legend(left: float, text: dict[str, str]) -> str:
    return (f'<rect x="{left}" y="6" width="12" height="12" fill="#0f766e"/>'
            f'<text x="{left + 18}" y="16" class="legend">{escape(text["demand"])}</text>'
            f'<rect x="{left + 130}" y="6" width="12" height="12" fill="#d6a354"/>'
            f'<text x="{left + 148}" y="16" class="legend">{escape(text["supply"])}</text>')


def _share_bar(x: float, y: float, share: float | None, scale: float, width: float, colour: str,
               text: dict[str, str]) -> str:
    if share is None:
        return (f'<text x="{x + 4}" y="{y + 10}" class="legend" fill="#9ca3af">'
                f'{escape(text["demand_hidden"])}</text>')
    length = max(1.0, width * share / scale)
    return (f'<rect x="{x}" y="{y}" width="{length:.1f}" height="12" fill="{colour}"/>'
            f'<text x="{x + length + 5:.1f}" y="{y + 10}" class="legend">{percent(share)}</text>')


def _status_tag(x: float, y: float, status: str | None, text: dict[str, str]) -> str:
    if status == "undersupplied":
        return f'<text x="{x}" y="{y}" class="tag" fill="#b91c1c">▲ {escape(text["under"])}</text>'
    if status == "oversupplied":
        return f'<text x="{x}" y="{y}" class="tag" fill="#1d4ed8">▼ {escape(text["over"])}</text>'
    return ""


def trend_svg(rows: list[tuple[str, float | None]], *, label: str) -> str:
    """Diverging bars of the change of share in percentage points; None is drawn as a dash."""
    left = 14 + max([text_width(name) for name, _ in rows] + [48])
    top, half, row_h = 10, 150, 24
    width, height = left + 2 * half + 90, top + row_h * max(len(rows), 1) + 10
    axis = left + half + 40  # room on the left for the labels of falling categories
    scale = max([abs(v) for _, v in rows if v is not None] + [1.0])
    parts = [svg_open(width, height, label),
             f'<line x1="{axis}" y1="{top - 4}" x2="{axis}" y2="{height - 4}" stroke="#9ca3af"/>']
    for i, (name, change) in enumerate(rows):
        y = top + i * row_h
        parts.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end" class="axis">{escape(name)}</text>')
        if change is None:
            parts.append(f'<text x="{axis + 6}" y="{y + 14}" class="legend" fill="#9ca3af">—</text>')
            continue
        length = max(1.0, half * abs(change) / scale)
        x = axis if change >= 0 else axis - length
        colour = "#15803d" if change >= 0 else "#b91c1c"
        tx, anchor = (axis + length + 5, "start") if change >= 0 else (axis - length - 5, "end")
        parts.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{length:.1f}" height="14" fill="{colour}"/>'
                     f'<text x="{tx:.1f}" y="{y + 15}" text-anchor="{anchor}" class="legend">{signed(change)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_open(width: float, height: float, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(label)}" '
            f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">')


# --------------------------------------------------------------------------- page


CSS = """
:root { color-scheme: light; }
body { font-family: %FONT%; margin: 0; background: #f8fafc; color: #1f2937; line-height: 1.55; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 32px 0 10px; border-bottom: 2px solid #e5e7eb; padding-bottom: 4px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
.sub { color: #4b5563; margin: 2px 0; font-size: 14px; }
.kpis { display: flex; gap: 14px; flex-wrap: wrap; margin: 18px 0; }
.kpi { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 16px; min-width: 150px; }
.kpi b { display: block; font-size: 24px; }
.kpi span { color: #6b7280; font-size: 13px; }
.card { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 14px 18px; margin: 14px 0; }
.region.suppressed { color: #6b7280; }
.note { color: #6b7280; font-size: 13px; }
ul.sentences li { margin: 3px 0; }
svg { max-width: 100%; height: auto; display: block; margin: 6px 0; }
svg text { font-family: %FONT%; }
svg .axis { font-size: 12px; fill: #374151; }
svg .cell { font-size: 11px; }
svg .legend { font-size: 11px; fill: #374151; }
svg .tag { font-size: 12px; font-weight: 600; }
table { border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #e5e7eb; }
td.num { text-align: right; }
nav a { margin-right: 10px; font-size: 13px; color: #0f766e; }
h4 { font-size: 14px; margin: 14px 0 4px; color: #374151; }
tr.gap td { background: #fff7ed; font-weight: 600; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 8px 28px; }
""".replace("%FONT%", FONT_STACK)


def render_report(tables: ReportTables, summary: dict[str, Any], meta: dict[str, Any], *, lang: str = "zh",
                  sections: dict[str, str] | None = None) -> str:
    """The whole page as a string (UTF-8 text, no external resource).

    ``sections`` are further fragments by place (:func:`training.report_sections.depth_sections`):
    ``after_requests``, ``region:<code>`` (inside a district's section) and ``glossary``.
    """
    text = TEXT[lang]
    extra = sections or {}
    columns = _category_columns(tables, lang)
    body = [
        _header(summary, meta, text, lang, tables),
        _highlights(tables, text, lang),
        _overview(tables, summary, columns, text, lang),
        _areas_section(tables, columns, text, lang),
        _requests_section(summary, meta, text, lang),
        extra.get("after_requests", ""),
        f'<h2 id="regions">{escape(text["regions"])}</h2>',
        _contents(summary, lang),
        *[_region_section(code, block, tables, meta, text, lang, extra.get(f"region:{code}", ""))
          for code, block in summary["regions"].items()],
        _definitions(meta, text, lang),
        extra.get("glossary", ""),
        _privacy(meta, text, lang),
    ]
    html_lang = "zh-CN" if lang == "zh" else "en"
    return (f'<!DOCTYPE html>\n<html lang="{html_lang}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(text["title"])}</title><style>{CSS}</style></head>'
            f'<body><main>{"".join(body)}</main></body></html>\n')


def _category_columns(tables: ReportTables, lang: str) -> list[tuple[str, str]]:
    """Categories ordered by city share (most popular first), suppressed ones last."""
    now = tables.city.filter(pl.col("period") == "now").sort(
        [pl.col("share").is_null(), "share", "category"], descending=[False, True, False]
    )
    return [(c, category_label(c, lang)) for c in now["category"].to_list()]


def _local_time(value: str, meta: dict[str, Any]) -> str:
    moment = datetime.fromisoformat(value).astimezone(ZoneInfo(meta["timezone"]))
    return moment.strftime("%Y-%m-%d %H:%M")


def _header(summary: dict[str, Any], meta: dict[str, Any], text: dict[str, str], lang: str,
            tables: ReportTables) -> str:
    window = text["window"].format(start=_local_time(meta["window_start"], meta),
                                   end=_local_time(meta["window_end"], meta), days=meta["window_days"],
                                   tz=meta["timezone"])
    rule = text["end_latest"] if meta["window_end_source"] == "latest_interaction" else text["end_given"]
    active = summary["city"]["active_users"]
    status = tables.supply_demand["status"]
    kpis = [
        (f"{active:,}" if active is not None else "—", text["kpi_active"]),
        (str(sum(1 for r in summary["regions"].values() if not r["suppressed"])), text["kpi_regions"]),
        (str(int((status == "undersupplied").sum())), text["kpi_under"]),
        (str(int((status == "oversupplied").sum())), text["kpi_over"]),
    ]
    cards = "".join(f'<div class="kpi"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in kpis)
    return (f'<h1>{escape(text["title"])}</h1><p class="sub">{escape(window)}</p>'
            f'<p class="sub">{escape(rule)}</p>'
            f'<p class="sub">{escape(_left_out_line(meta, text))}</p>'
            f'<p class="sub">{escape(text["generated"].format(at=_local_time(meta["generated_at"], meta)))}</p>'
            f'<div class="kpis">{cards}</div>')


def _left_out_line(meta: dict[str, Any], text: dict[str, str]) -> str:
    """How many flagged rows the report left out, and why (``meta["left_out"]``)."""
    left_out = meta.get("left_out") or {"rows": 0, "by_reason": {}}
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in left_out["by_reason"].items())
    return text["left_out"].format(n=f"{left_out['rows']:,}", reasons=f" ({reasons})" if reasons else "")


def sentence(cell: dict[str, Any], text: dict[str, str], lang: str) -> str:
    """One plain-language line about a preference cell (unescaped; callers escape)."""
    values = {
        "region": region_name(cell.get("region_code"), lang),
        "area": area_label(cell.get("area_type"), lang),
        "age": cell.get("age_band") or "",
        "category": category_label(cell["category"], lang),
        "share": percent(cell["share"]),
        "lift": text["times"].format(x=f"{cell['lift']:.1f}"),
    }
    if lang == "zh":
        values["lift"] = f"{cell['lift']:.1f}"
    key = {"region": "sentence_region", "region_age": "sentence_group", "area_age": "sentence_area"}
    return text[key[cell["segment_type"]]].format(**values)


def _visible_cells(tables: ReportTables, segment_type: str) -> pl.DataFrame:
    return tables.preferences.filter((pl.col("segment_type") == segment_type) & ~pl.col("suppressed"))


def _highlights(tables: ReportTables, text: dict[str, str], lang: str) -> str:
    best = _visible_cells(tables, "region_age").sort(["lift", "category"], descending=[True, False]).head(6)
    if best.height == 0:
        return ""
    items = "".join(f"<li>{escape(sentence(c, text, lang))}</li>" for c in best.to_dicts())
    return f'<div class="card"><h3>{escape(text["highlights"])}</h3><ul class="sentences">{items}</ul></div>'


def _lift_cells(frame: pl.DataFrame, row_key: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (r[row_key], r["category"]): {"lift": r["lift"], "share": r["share"], "users": r["engaged_users"]}
        for r in frame.to_dicts()
    }


def _overview(tables: ReportTables, summary: dict[str, Any], columns: list[tuple[str, str]],
              text: dict[str, str], lang: str) -> str:
    rows = [(code, region_name(code, lang)) for code in summary["regions"]]
    cells = _lift_cells(_visible_cells(tables, "region"), "region_code")
    chart = heatmap_svg(rows, columns, cells, text=text, label=text["overview"])
    return (f'<h2 id="overview">{escape(text["overview"])}</h2><div class="card">{chart}'
            f'<p class="note">{escape(text["overview_note"])}</p></div>')


def _areas_section(tables: ReportTables, columns: list[tuple[str, str]], text: dict[str, str], lang: str) -> str:
    segments = (
        tables.preferences.filter(pl.col("segment_type") == "area_age")
        .select("area_type", "age_band").unique().sort("area_type", "age_band")
    )
    if segments.height == 0:
        return ""
    rows = [(f"{a}|{g}", f"{area_label(a, lang)} {g}") for a, g in segments.iter_rows()]
    visible = _visible_cells(tables, "area_age").with_columns(
        pl.concat_str("area_type", pl.lit("|"), "age_band").alias("segment")
    )
    chart = heatmap_svg(rows, columns, _lift_cells(visible, "segment"), text=text, label=text["areas"])
    return f'<h2 id="areas">{escape(text["areas"])}</h2><div class="card">{chart}</div>'


def _requests_section(summary: dict[str, Any], meta: dict[str, Any], text: dict[str, str], lang: str) -> str:
    """Per district: requested vs engaged vs supplied, "asked for, not offered" first; programmes; answers."""
    blocks = {code: block["requests"] for code, block in summary["regions"].items() if block.get("requests")}
    if not blocks:
        return ""
    k = meta["min_users"]
    parts = [f'<h2 id="requests">{escape(text["requests"])}</h2>',
             f'<p class="note">{escape(text["requests_note"].format(k=k))}</p>']
    for code, requests in blocks.items():
        if not requests["demand"] and not requests["programmes"]:
            continue
        parts.append(f'<section class="card requests" id="requests-{section_id(code)}">'
                     f'<h3>{escape(region_name(code, lang))}</h3>{_demand_table(requests["demand"], text, lang)}'
                     f'{_programme_table(requests["programmes"], text)}{_answers_line(requests["answers"], text)}'
                     "</section>")
    return "".join(parts)


def _demand_table(rows: list[dict[str, Any]], text: dict[str, str], lang: str) -> str:
    head = "".join(f"<th>{escape(text[k])}</th>" for k in ("category", "requested", "engaged", "supplied"))
    ordered = sorted(rows, key=lambda r: (not r["asked_not_offered"], -(r["requesters"] or 0), r["category"]))
    body = "".join(
        f'<tr class="{"gap" if r["asked_not_offered"] else ""}"><td>{escape(category_label(r["category"], lang))}'
        f'{" · " + escape(text["asked_not_offered"]) if r["asked_not_offered"] else ""}</td>'
        f'<td class="num">{_count(r["requesters"])}</td><td class="num">{_count(r["engaged_users"])}</td>'
        f'<td class="num">{_count(r["supply_items"])}</td></tr>'
        for r in ordered)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _programme_table(rows: list[dict[str, Any]], text: dict[str, str]) -> str:
    if not rows:
        return ""
    body = "".join(f'<tr><td class="num">{int(r["rank"])}</td><td>{escape(r["title"] or r["item_id"])}</td>'
                   f'<td class="num">{int(r["requesters"]):,}</td></tr>' for r in rows)
    return (f'<h4>{escape(text["programmes"])}</h4><table><thead><tr><th>{escape(text["rank"])}</th>'
            f'<th>{escape(text["item"])}</th><th>{escape(text["requested"])}</th></tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _answers_line(answers: dict[str, Any] | None, text: dict[str, str]) -> str:
    if not answers or answers["suppressed"]:
        return ""
    days = answers["median_days_to_answer"]
    line = text["answers"].format(answered=answers["answered"], requests=answers["requests"],
                                  days="—" if days is None else f"{days:.1f}")
    return f'<p class="sub">{escape(line)}</p>'


def _count(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def _contents(summary: dict[str, Any], lang: str) -> str:
    links = "".join(f'<a href="#{section_id(code)}">{escape(region_name(code, lang))}</a>'
                    for code in summary["regions"])
    return f"<nav>{links}</nav>"


def _region_section(code: str, block: dict[str, Any], tables: ReportTables, meta: dict[str, Any],
                    text: dict[str, str], lang: str, depth: str = "") -> str:
    name = region_name(code, lang)
    heading = f"{name} ({code})" if name != code else code
    anchor = section_id(code)
    if block["suppressed"]:
        note = text["suppressed_region"].format(k=meta["min_users"])
        return (f'<section class="card region suppressed" id="{anchor}"><h3>{escape(heading)}</h3>'
                f'<p>{escape(note)}</p></section>')
    parts = [
        f'<section class="card region" id="{anchor}"><h3>{escape(heading)}</h3>',
        f'<p class="sub">{escape(text["active_in_region"].format(n=format(block["active_users"], ",")))}</p>',
        '<div class="cols"><div>', _region_sentences(code, tables, text, lang), "</div>",
        "<div>", _region_items(block, meta, text, lang), "</div></div>",
        '<div class="cols"><div>', _region_supply(code, tables, text, lang, name), "</div>",
        "<div>", _region_trend(code, tables, meta, text, lang, name), "</div></div>",
        depth,
        "</section>",
    ]
    return "".join(parts)


def _region_sentences(code: str, tables: ReportTables, text: dict[str, str], lang: str) -> str:
    own = _visible_cells(tables, "region").filter(pl.col("region_code") == code)
    top = own.sort(["lift", "category"], descending=[True, False]).head(3).to_dicts()
    groups = (
        _visible_cells(tables, "region_age").filter((pl.col("region_code") == code) & (pl.col("lift") >= 1.5))
        .sort(["lift", "category"], descending=[True, False]).head(3).to_dicts()
    )
    lines = "".join(f"<li>{escape(sentence(c, text, lang))}</li>" for c in top)
    group_lines = ("".join(f"<li>{escape(sentence(c, text, lang))}</li>" for c in groups)
                   or f'<li class="note">{escape(text["no_groups"])}</li>')
    return (f'<h4>{escape(text["top_categories"])}</h4><ul class="sentences">{lines}</ul>'
            f'<h4>{escape(text["groups"])}</h4><ul class="sentences">{group_lines}</ul>')


def _region_supply(code: str, tables: ReportTables, text: dict[str, str], lang: str, name: str) -> str:
    frame = tables.supply_demand.filter(pl.col("region_code") == code).sort(
        [pl.col("demand_share").is_null(), "demand_share", "supply_share", "category"],
        descending=[False, True, True, False],
    )
    rows = [dict(r, label=category_label(r["category"], lang)) for r in frame.to_dicts()
            if r["demand_share"] is not None or (r["supply_share"] or 0) > 0]
    chart = supply_demand_svg(rows, text=text, label=f"{name} {text['supply_demand']}")
    return (f'<h4>{escape(text["supply_demand"])}</h4>{chart}'
            f'<p class="note">{escape(text["supply_demand_note"])}</p>')


def _region_trend(code: str, tables: ReportTables, meta: dict[str, Any], text: dict[str, str], lang: str,
                  name: str) -> str:
    frame = tables.trends.filter((pl.col("segment_type") == "region") & (pl.col("region_code") == code)).sort(
        [pl.col("change_pp").is_null(), "change_pp", "category"], descending=[False, True, False]
    )
    rows = [(category_label(r["category"], lang), r["change_pp"]) for r in frame.to_dicts()]
    title = text["trend"].format(days=meta["window_days"])
    return (f'<h4>{escape(title)}</h4>{trend_svg(rows, label=f"{name} {title}")}'
            f'<p class="note">{escape(text["trend_note"])}</p>')


def _region_items(block: dict[str, Any], meta: dict[str, Any], text: dict[str, str], lang: str) -> str:
    heading = f'<h4>{escape(text["top_items"])}</h4>'
    if not block["top_items"]:
        return heading + f'<p class="note">{escape(text["no_items"].format(k=meta["min_users"]))}</p>'
    head = "".join(f"<th>{escape(text[k])}</th>" for k in ("rank", "item", "category", "users"))
    rows = "".join(
        f'<tr><td class="num">{int(i["rank"])}</td><td>{escape(i["title"] or i["item_id"])}</td>'
        f'<td>{escape(category_label(i["category"], lang))}</td><td class="num">{int(i["users"]):,}</td></tr>'
        for i in block["top_items"]
    )
    return f"{heading}<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _definitions(meta: dict[str, Any], text: dict[str, str], lang: str) -> str:
    weights = ", ".join(f"{a} {w:g}" for a, w in meta.get("action_weights", {}).items())
    rule = text["end_latest"] if meta["window_end_source"] == "latest_interaction" else text["end_given"]
    lines = [line.format(days=meta["window_days"], end_rule=rule, weights=weights,
                         rate=f"{meta.get('rate_weight_per_star', 1.0):g}") for line in DEFINITIONS[lang]]
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f'<h2 id="definitions">{escape(text["definitions"])}</h2><div class="card"><ul>{items}</ul></div>'


def _privacy(meta: dict[str, Any], text: dict[str, str], lang: str) -> str:
    items = "".join(f"<li>{escape(line.format(k=meta['min_users']))}</li>" for line in PRIVACY[lang])
    return f'<h2 id="privacy">{escape(text["privacy"])}</h2><div class="card"><ul>{items}</ul></div>'
