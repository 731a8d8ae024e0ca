"""The algorithm's mechanism description (算法机制说明), for filing (算法备案) and for the public.

One document per model version, Chinese first with English headings, in Markdown and HTML:
purpose, data and features, model family and its chosen hyperparameters, training cadence,
evaluation (overall, per segment, and the fairness gate), the rules every list obeys, the
residents' controls, and the safeguards. Everything version-specific is read from the model
artifact's manifest and settings (:func:`facts_from_bundle`), so ``recsys model-card``, the
training run's artifact and ``GET /v1/model/card`` describe a version the same way; the
training job and the CLI add the gate's decision from the run.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from recsys.bundle import ModelBundle
from recsys.settings import EngineSettings

Section = tuple[str, list[str | list[str] | list[tuple[str, str]]]]
"""(heading, blocks): a block is a paragraph, a bullet list, or a two-column table."""

SEGMENT_PREFIX = "ndcg@10."
HEADLINE_METRICS = ("ndcg@10", "recall@10", "recall@20", "precision@10", "coverage@10", "novelty@10",
                    "rural_urban_ndcg_ratio", "ndcg@10_lift_over_popularity")


@dataclass
class CardFacts:
    """What one card says about one version."""

    version: str
    model: str
    params: dict[str, Any]
    settings: EngineSettings
    manifest: dict[str, Any]
    metrics: dict[str, float]
    n_users: int
    n_items: int
    editorial_pool: list[str] = field(default_factory=list)
    restricted_items: int = 0
    gate: dict[str, Any] = field(default_factory=dict)


def facts_from_bundle(bundle: ModelBundle, version: str, gate: dict[str, Any] | None = None) -> CardFacts:
    """The card's facts for ``bundle`` served or registered as ``version``."""
    manifest = bundle.manifest
    metrics = {**(manifest.get("metrics") or {}), **(manifest.get("evaluation_metrics") or {})}
    catalog = bundle.catalog
    pool = [f"{catalog.items.id_of(int(i))} {catalog.title[int(i)]}".strip() for i in catalog.editorial.nonzero()[0]]
    return CardFacts(
        version=version, model=str(manifest.get("model", bundle.model.name)),
        params=dict(manifest.get("params") or bundle.model.config.model_dump()), settings=bundle.settings,
        manifest=manifest, metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        n_users=len(bundle.users), n_items=len(catalog), editorial_pool=pool,
        restricted_items=int((catalog.min_age > 0).sum()), gate={**(manifest.get("gate") or {}), **(gate or {})},
    )


def sections(facts: CardFacts) -> list[Section]:
    s = facts.settings
    c = s.controls
    m = facts.manifest
    return [
        ("一、服务目的 Purpose", [
            "本算法为公共文化云平台的居民推荐活动、展览、戏曲演出、讲座、图书和数字资源，使“政府端菜”变为“群众点菜”："
            "按居民兴趣、所在区域和供需缺口精准送达公共文化服务。推荐不用于商业营销。",
        ]),
        ("二、数据与特征 Data and features", [
            "使用的数据：居民与资源的互动（浏览、点击、收藏、分享、预约、签到、评分、不感兴趣）、居民档案（行政区划、年龄段、"
            "城乡类型）和资源目录（类别、类型、标签、区域、场馆位置、起止时间、是否免费、适龄 min_age、编辑精选）。",
            [f"互动权重 action weights: {_pairs(s.action_weights)}；评分 = 分值 x {s.rate_weight_per_star:g}",
             f"时间衰减半衰期 half-life: {s.half_life_days:g} 天；"
             f"置信度变换 confidence: {s.confidence} (alpha {s.alpha:g})",
             f"数据时间范围 data window: {m.get('data_start', '?')} — {m.get('data_end', '?')}",
             f"训练规模 size: {facts.n_users} 位居民 x {facts.n_items} 项资源"],
        ]),
        ("三、模型与超参数 Model family and hyperparameters", [
            f"模型族 model family: **{facts.model}**（版本 version {facts.version}，训练时间 trained at "
            f"{m.get('trained_at', '?')}）。超参数每次训练在验证集上搜索选定 (hyperparameters chosen on validation):",
            [f"{key}: {value}" for key, value in sorted(flat(facts.params).items())],
        ]),
        ("四、训练周期 Training cadence", [
            "每周自动重训一次（`recsys train --json --wait 3600`，随包提供的定时任务：每周一 03:30）；"
            "服务端每 60 秒查询注册表，新的 champion 版本在一分钟内生效；门槛未通过时保留原版本。",
        ]),
        ("五、效果评估与公平门槛 Evaluation and the fairness gate", [
            f"离线评估：在训练截止后的测试窗口（截止 test cutoff {m.get('test_cutoff', '?')}）"
            "按上线规则生成推荐并打分。",
            [(name, _number(facts.metrics[name])) for name in HEADLINE_METRICS if name in facts.metrics],
            "分群结果 per segment (NDCG@10):",
            [(name.removeprefix(SEGMENT_PREFIX), _number(value)) for name, value in sorted(facts.metrics.items())
             if name.startswith(SEGMENT_PREFIX) and name.count(".") >= 2],
            "公平门槛 fairness gate：新版本只有在同一测试窗口上 NDCG@10 不低于现任版本（容差内），"
            f"且农村/城市 NDCG@10 之比不低于下限时才上线 (rural/urban NDCG ratio >= floor)。{_gate_line(facts.gate)}",
        ]),
        ("六、每个推荐列表遵守的规则 Rules applied to every list", [[
            "不推荐已互动过的资源、已隐藏的资源和已结束的资源 (never seen, hidden or ended items)",
            "按请求的位置半径、类型和类别过滤；数字资源不受距离限制 (place, kind and category filters)",
            "未成年人保护 minors: 0-17 岁年龄段的居民不会收到 min_age 高于其年龄段下限的资源"
            f"（目录中有 {facts.restricted_items} 项适龄限制资源），API、批量推荐和离线评估同一规则",
            f"不感兴趣 not_interested: 该资源不再推荐；其最相似的 {c.not_interested_similar} 项资源在 "
            f"{c.not_interested_days:g} 天内降权移出列表；训练时视为负反馈（抵消此前的互动）",
            "居民删除的兴趣标签：带该标签的资源移出列表，相关历史不再参与计算，直到居民再次互动",
            "类别多样性 diversity: MMR 打散，默认 0.2 (category diversity by MMR)",
            f"人工干预 editorial slots: 位置 {', '.join(str(p) for p in c.editorial_slots)}"
            f"（{'、'.join(c.editorial_lists)} 列表）"
            f"由编辑精选池中最匹配的资源填充并标注 editorial；当前池 {len(facts.editorial_pool)} 项",
            "冷启动 fallbacks: 无法个性化时按同区同龄、本区或全市热门推荐，并在 fallback 字段注明",
            f"适老模式 senior_mode (60+): 就近 +{c.senior.nearby:g}（{c.senior.nearby_km:g} 公里内或本区）、日间 "
            f"+{c.senior.daytime:g}（{c.senior.day_start_hour}-{c.senior.day_end_hour} 时）、免费 +{c.senior.free:g}、"
            f"数字资源 +{c.senior.digital:g}（加在 0..1 归一化得分上）",
            "每项推荐附简短真实的推荐理由 (a true reason next to every item)",
        ]]),
        ("七、用户自主选择 User controls", [[
            "关闭个性化 PUT /v1/users/{user_id}/settings {\"personalized\": false}："
            "下一次请求起，所有服务进程只按全市热门和编辑精选推荐，不使用任何个人特征；可随时重新开启",
            "查看与管理兴趣标签 GET /v1/users/{user_id}/profile；DELETE/PUT /v1/users/{user_id}/profile/tags/{tag}",
            "不感兴趣 POST /v1/interactions action=not_interested",
            "适老模式 PUT /v1/users/{user_id}/settings {\"senior_mode\": true}",
            "删除个人数据 DELETE /v1/users/{user_id}（被遗忘权）",
        ]]),
        ("八、安全保障 Safeguards", [[
            "防数据投毒 poisoning defence: 新账号集中刷量、单一来源垄断、未知用户的互动被标记，"
            "并排除在训练、评估和报告之外",
            "隐私保护 privacy suppression: 规划报告中少于 10 人的单元格不显示数字，并隐藏可被减法还原的相邻单元格",
            "被遗忘权 erasure: 删除请求落盘后立即生效，下一次入库时从所有存储文件和用户选择记录中清除，"
            "下一次训练后模型不再含有该用户",
            "访问控制 access: 每次写入和个人数据读取都需要带权限范围的 API 密钥；日志中不记录用户标识",
        ]]),
    ]


def render_markdown(facts: CardFacts) -> str:
    lines = [f"# 算法机制说明 · Algorithm mechanism description — 版本 version {facts.version}", ""]
    for heading, blocks in sections(facts):
        lines += [f"## {heading}", ""]
        for block in blocks:
            if isinstance(block, str):
                lines += [block, ""]
            elif block and isinstance(block[0], tuple):
                lines += ["| 指标 metric | 数值 value |", "|---|---|"]
                lines += [f"| {name} | {value} |" for name, value in block]
                lines.append("")
            else:
                lines += [f"- {item}" for item in block]
                lines.append("")
    return "\n".join(lines)


def render_html(facts: CardFacts) -> str:
    body = [f"<h1>算法机制说明 · Algorithm mechanism description — 版本 version {html.escape(facts.version)}</h1>"]
    for heading, blocks in sections(facts):
        body.append(f"<h2>{html.escape(heading)}</h2>")
        for block in blocks:
            if isinstance(block, str):
                body.append(f"<p>{_inline(block)}</p>")
            elif block and isinstance(block[0], tuple):
                rows = "".join(f"<tr><td>{html.escape(str(n))}</td><td>{html.escape(str(v))}</td></tr>"
                               for n, v in block)
                body.append(f"<table><tr><th>指标 metric</th><th>数值 value</th></tr>{rows}</table>")
            else:
                body.append("<ul>" + "".join(f"<li>{_inline(str(item))}</li>" for item in block) + "</ul>")
    return ('<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
            f"<title>算法机制说明 {html.escape(facts.version)}</title></head><body>" + "\n".join(body)
            + "</body></html>\n")


def _inline(text: str) -> str:
    """Escaped text with ``**bold**`` and ```code``` marks of the Markdown rendered."""
    escaped = html.escape(text)
    for mark, tag in (("**", "strong"), ("`", "code")):
        parts = escaped.split(mark)
        escaped = "".join(part if i % 2 == 0 else f"<{tag}>{part}</{tag}>" for i, part in enumerate(parts))
    return escaped


def _gate_line(gate: dict[str, Any]) -> str:
    words = []
    if "tolerance" in gate:
        words.append(f"容差 tolerance {gate['tolerance']}")
    if "rural_floor" in gate:
        words.append(f"农村下限 rural floor {gate['rural_floor']}")
    if "decision" in gate:
        words.append(f"本版本的门槛结论 decision: {gate['decision']}")
    for reason in gate.get("reasons", []):
        words.append(f"理由 reason: {reason}")
    return "；".join(words)


def _pairs(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in values.items())


def _number(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as one level of dotted keys (``als.factors``), as MLflow params and the card list them."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
