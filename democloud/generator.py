"""A synthetic "cultural cloud" for Beijing: users, a catalog and a behaviour log.

The data is made so that a recommender and a planner have real structure to find:

* users live in Beijing's 16 districts (outer districts mostly rural) and have individual
  tastes over cultural categories (a sparse Dirichlet, so each has a few favourites);
* item popularity is long-tailed; offline items draw users mostly from their own and
  neighbouring districts (weight ``exp(-distance / scale)``), digital items from everywhere;
* a few segment effects (district x age band -> category) are planted and written to
  ``ground_truth.json`` so that a demand report can be checked against the truth;
* interactions follow a funnel (view -> click -> favorite / reserve -> attend, some
  shares and ratings) and happen only while an item is live and the user is registered;
* residents' requests (点单) with two planted patterns, and the menu of programmes they can
  ask for (:mod:`democloud.requests`).

Everything is vectorised numpy (no per-interaction Python) so that a million users and
twenty million interactions take minutes, and the polars frames are built from arrays.
The same seed and end date give identical frames.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from democloud.requests import menu_frame, plant_requests, without_opera
from features import schemas
from features.districts import DISTRICTS
from recsys.contract import ACTIONS, AGE_BANDS

log = logging.getLogger(__name__)

TIMEZONE = "Asia/Shanghai"
KINDS: tuple[str, ...] = ("event", "exhibition", "opera", "film", "digital")
CATEGORIES: tuple[str, ...] = (
    "戏曲", "音乐", "舞蹈", "话剧", "讲座", "非遗", "亲子", "数字艺术", "书画", "摄影", "电影", "阅读",
)
STAGES: tuple[str, ...] = ("users", "items", "engagements", "funnel", "frames")
"""The steps :func:`generate` reports to its ``progress`` callback, in order."""

_US = 1_000_000
_HOUR = 3600 * _US
_DAY = 24 * _HOUR
_NEVER = np.iinfo(np.int64).max // 4
"""End of the live window of items that never close (digital content)."""

_UPCOMING_DAYS = 30
"""Events are scheduled up to this many days after the end date (the live catalog)."""
_EVENT_LEAD_DAYS = 14
"""A one-evening item is live (viewable, bookable) from this many days before it starts."""
_TRAVEL_SCALE_KM = {True: 10.0, False: 16.0}
"""Distance decay scale by user district (core, outer): outer residents travel farther."""
_ENGAGEMENTS_PER_DAY = 0.21
"""Mean item engagements (each starts with a view) per user per active day."""


@dataclass(frozen=True)
class SegmentEffect:
    """A planted effect: users of ``age_band`` in ``region_code`` favour ``category``."""

    region_code: str
    age_band: str
    category: str
    multiplier: float


EFFECTS: tuple[SegmentEffect, ...] = (
    SegmentEffect("110119", "60+", "戏曲", 3.0),
    SegmentEffect("110118", "60+", "戏曲", 3.0),
    SegmentEffect("110116", "60+", "戏曲", 3.0),
    SegmentEffect("110111", "60+", "戏曲", 3.0),
    SegmentEffect("110105", "18-34", "数字艺术", 3.0),
    SegmentEffect("110108", "18-34", "数字艺术", 3.0),
    SegmentEffect("110112", "35-59", "亲子", 3.0),
)


@dataclass(frozen=True)
class DemoConfig:
    """Size, span and seed of a synthetic data set."""

    users: int = 20_000
    items: int = 2_000
    days: int = 60
    seed: int = 0
    end_date: dt.date | None = None
    """Last day of activity; ``None`` means today in Asia/Shanghai."""


@dataclass
class DemoData:
    """The three tables (stored schemas of :mod:`features.schemas`) and the planted truth."""

    users: pl.DataFrame
    items: pl.DataFrame
    interactions: pl.DataFrame
    ground_truth: dict
    programmes: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=schemas.ITEMS))
    """The menu (菜单): catalogue rows of kind ``programme``, a provider file of their own."""
    requests: pl.DataFrame = field(default_factory=pl.DataFrame)
    """Residents' requests (点单), the data contract's requests file."""


# --------------------------------------------------------------------------- content tables

_KIND_SHARE = {"event": 0.34, "exhibition": 0.14, "opera": 0.12, "film": 0.15, "digital": 0.25}
_KIND_CATEGORIES: dict[str, dict[str, float]] = {
    "event": {"音乐": 0.22, "舞蹈": 0.12, "话剧": 0.14, "讲座": 0.16, "非遗": 0.10, "亲子": 0.16, "阅读": 0.10},
    "exhibition": {"书画": 0.28, "数字艺术": 0.27, "非遗": 0.15, "摄影": 0.15, "亲子": 0.15},
    "opera": {"戏曲": 1.0},
    "film": {"电影": 1.0},
    "digital": {"阅读": 0.22, "讲座": 0.20, "戏曲": 0.15, "音乐": 0.10, "电影": 0.15, "亲子": 0.10,
                "数字艺术": 0.08},
}
# Attention an item attracts per live day, relative to a one-evening event.
_KIND_ATTENTION = {"event": 1.0, "exhibition": 0.45, "opera": 1.0, "film": 0.9, "digital": 0.045}
_KIND_FREE = {"event": 0.85, "exhibition": 0.8, "opera": 0.55, "film": 0.85, "digital": 0.95}
_KIND_PREFIX = {"event": "ev", "exhibition": "ex", "opera": "op", "film": "fm", "digital": "dg"}
_KIND_CAPACITY: dict[str, tuple[int, ...]] = {
    "event": (80, 120, 200, 300, 500, 800, 1200),
    "exhibition": (200, 500, 1000, 2000),
    "opera": (300, 600, 900, 1200),
    "film": (60, 120, 200, 300),
}
_KIND_PROVIDERS: dict[str, dict[str, float]] = {
    "event": {"市文化馆": 0.35, "区文化馆联盟": 0.40, "市图书馆": 0.15, "演艺集团": 0.10},
    "exhibition": {"市文化馆": 0.50, "区文化馆联盟": 0.40, "市图书馆": 0.10},
    "opera": {"演艺集团": 0.60, "区文化馆联盟": 0.40},
    "film": {"区文化馆联盟": 0.70, "市文化馆": 0.30},
    "digital": {"数字文化馆": 0.60, "市图书馆": 0.40},
}
# Where offline supply concentrates beyond the districts' venue weights (798 and Zhongguancun
# for digital art, the old theatres for opera, rural public film screenings).
_SUPPLY_BIAS: dict[tuple[str, str], float] = {
    ("数字艺术", "110105"): 4.0, ("数字艺术", "110108"): 3.0, ("数字艺术", "110101"): 1.5,
    ("戏曲", "110101"): 1.8, ("戏曲", "110102"): 2.2,
}
_OUTER_FILM_BIAS = 1.5

# How much each category appeals across the population, and how age bands shift it.
_BASE_TASTE = {"戏曲": 0.8, "音乐": 1.2, "舞蹈": 0.8, "话剧": 0.9, "讲座": 1.0, "非遗": 0.8, "亲子": 1.0,
               "数字艺术": 0.8, "书画": 0.8, "摄影": 0.7, "电影": 1.3, "阅读": 1.1}
_AGE_TASTE: dict[str, dict[str, float]] = {
    "0-17": {"亲子": 1.8, "电影": 1.4, "数字艺术": 1.3, "阅读": 1.3, "戏曲": 0.4, "讲座": 0.6, "书画": 0.8},
    "18-34": {"音乐": 1.4, "话剧": 1.4, "数字艺术": 1.2, "摄影": 1.3, "电影": 1.3, "戏曲": 0.5, "亲子": 0.7},
    "35-59": {"亲子": 1.2, "讲座": 1.3, "书画": 1.1, "阅读": 1.1},
    "60+": {"戏曲": 1.5, "书画": 1.4, "非遗": 1.3, "舞蹈": 1.3, "讲座": 1.2, "数字艺术": 0.5, "话剧": 0.7,
            "摄影": 0.8},
}
_TASTE_CONCENTRATION = 3.0
"""Sum of a user's Dirichlet parameters: small means a few favourite categories."""
_AGE_SHARE = {"urban": (0.08, 0.38, 0.36, 0.18), "rural": (0.07, 0.24, 0.38, 0.31)}
_AGE_ACTIVITY = (0.8, 1.1, 1.0, 0.9)

# Local hour-of-day profile of app use (Asia/Shanghai), busiest in the evening.
_HOURLY = (0.3, 0.15, 0.1, 0.1, 0.1, 0.2, 0.5, 1.0, 1.6, 1.8, 1.9, 2.0,
           2.4, 2.2, 1.9, 1.8, 1.8, 1.9, 2.2, 2.8, 3.2, 3.3, 2.6, 1.2)

# (themes, suffixes by kind, tags); a title reads 《theme》suffix.
_CONTENT: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]], tuple[str, ...]]] = {
    "音乐": (("春之声", "京韵流芳", "星空下的旋律", "运河之歌", "丝路回响", "胡同里的琴音", "红色经典",
              "青春之歌", "夏夜弦歌", "民乐华章", "天籁童声", "致敬经典"),
             {"event": ("音乐会", "民乐专场", "合唱音乐会", "室内乐之夜", "公益演出"),
              "digital": ("线上音乐会", "音频专辑")},
             ("民乐", "交响", "合唱", "流行", "爵士", "古典", "室内乐")),
    "舞蹈": (("丝路花雨", "长城谣", "燕京舞韵", "春江花月夜", "青春舞动", "花开盛世", "鼓舞京城"),
             {"event": ("舞蹈专场", "舞剧", "群众舞蹈展演", "民族舞晚会")},
             ("民族舞", "芭蕾", "现代舞", "舞剧", "广场舞")),
    "话剧": (("茶馆", "雷雨", "北京人", "龙须沟", "日出", "四世同堂", "窝头会馆", "小井胡同"),
             {"event": ("话剧", "小剧场版", "经典复排", "青年版")},
             ("经典话剧", "小剧场", "喜剧", "京味儿", "悬疑")),
    "讲座": (("北京中轴线的故事", "故宫建筑之美", "宋词里的生活", "大运河文化", "京味文学漫谈",
              "红楼梦人物谈", "中医养生", "科学与艺术", "老北京胡同史话", "长城保护"),
             {"event": ("讲座", "公开课", "名家讲堂", "文化沙龙"), "digital": ("线上公开课", "视频讲座")},
             ("历史", "文学", "建筑", "科普", "健康", "艺术鉴赏")),
    "非遗": (("京绣", "景泰蓝", "北京风筝", "剪纸", "面人", "兔儿爷", "毛猴", "京剧脸谱", "宫灯", "内画鼻烟壶"),
             {"event": ("体验课", "技艺展示", "传承人讲堂", "手作工坊"),
              "exhibition": ("非遗展", "技艺特展", "传承成果展")},
             ("手工艺", "传统技艺", "民俗", "体验")),
    "亲子": (("小小京剧迷", "森林音乐会", "绘本里的中国年", "恐龙来了", "小小科学家", "童心看世界",
              "动物狂欢节", "我爱北京"),
             {"event": ("亲子剧场", "亲子工作坊", "儿童剧", "亲子手工课"),
              "exhibition": ("儿童互动展", "亲子科普展"), "digital": ("亲子绘本动画", "线上亲子课")},
             ("亲子", "儿童剧", "手工", "科普", "绘本")),
    "数字艺术": (("光影紫禁城", "数字敦煌", "清明上河图", "沉浸式星空", "赛博山水", "流动的宋画", "像素长城",
                "元宇宙漫游"),
               {"exhibition": ("沉浸式数字艺术展", "光影展", "数字艺术展", "新媒体艺术展"),
                "digital": ("线上展", "VR展厅", "数字展")},
               ("沉浸式", "光影", "新媒体", "互动装置", "VR")),
    "书画": (("墨韵京华", "笔墨春秋", "丹青颂", "翰墨飘香", "山水清音", "胡同写生", "四季花鸟"),
             {"exhibition": ("书画展", "作品展", "特展", "名家邀请展")},
             ("书法", "国画", "油画", "版画", "篆刻")),
    "摄影": (("光影北京", "胡同记忆", "长城四季", "运河人家", "京郊乡村", "城市之光", "新时代新北京"),
             {"exhibition": ("摄影展", "影像展", "摄影作品展")},
             ("纪实", "风光", "人像", "城市")),
    "电影": (("城南旧事", "骆驼祥子", "开国大典", "我和我的祖国", "流浪地球", "大闹天宫", "哪吒之魔童降世",
              "长津湖", "百鸟朝凤", "中国机长", "夺冠"),
             {"film": ("公益放映", "露天电影", "经典重映", "社区放映"), "digital": ("在线展映", "点播")},
             ("国产新片", "经典老片", "动画", "纪录片", "露天电影")),
    "阅读": (("骆驼祥子", "边城", "平凡的世界", "红楼梦", "城南旧事", "呼兰河传", "四世同堂", "朝花夕拾",
              "人世间"),
             {"event": ("读书会", "共读分享会", "作家见面会"), "digital": ("有声书", "电子书", "共读计划")},
             ("文学", "经典", "读书会", "儿童阅读")),
}
_OPERA_GENRES: dict[str, tuple[float, tuple[str, ...]]] = {
    "京剧": (0.40, ("霸王别姬", "锁麟囊", "贵妃醉酒", "空城计", "四郎探母", "野猪林", "红娘", "白蛇传",
                   "穆桂英挂帅", "定军山", "群英会", "春闺梦")),
    "昆曲": (0.15, ("牡丹亭", "长生殿", "桃花扇", "玉簪记", "西厢记", "浣纱记")),
    "评剧": (0.20, ("花为媒", "刘巧儿", "杨三姐告状", "秦香莲", "小女婿")),
    "河北梆子": (0.10, ("大登殿", "蝴蝶杯", "宝莲灯")),
    "豫剧": (0.08, ("花木兰", "朝阳沟", "穆桂英挂帅")),
    "越剧": (0.07, ("红楼梦", "梁山伯与祝英台")),
}
_OPERA_SUFFIXES = {"opera": ("", "全本", "折子戏专场", "名家名段", "青年演员专场", "进社区演出"),
                   "digital": ("经典唱段", "全剧视频", "名家名段赏析")}
_OPERA_EXTRA_TAGS = ("传统戏", "新编戏", "名家", "票友")


# --------------------------------------------------------------------------- internal state

@dataclass(frozen=True)
class _Window:
    """The activity window in UTC microseconds: [start, end], whole local days."""

    end_date: dt.date
    days: int
    start: int
    end: int


@dataclass
class _Users:
    district: np.ndarray      # int8 index into DISTRICTS
    age: np.ndarray           # int8 index into AGE_BANDS
    rural: np.ndarray         # bool
    registered: np.ndarray    # int64 us
    taste: np.ndarray         # float32 (users, categories), rows sum to 1


@dataclass
class _Items:
    kind: np.ndarray          # int8 index into KINDS
    category: np.ndarray      # int8 index into CATEGORIES
    district: np.ndarray      # int8, -1 for digital
    venue: list[str | None]
    lat: np.ndarray           # float64, NaN for digital
    lon: np.ndarray
    starts: np.ndarray        # int64 us
    ends: np.ndarray          # int64 us, _NEVER for digital
    live_lo: np.ndarray       # live window clipped to the activity window
    live_hi: np.ndarray
    weight: np.ndarray        # float64 attention (popularity x kind x live days)
    titles: list[str]
    tags: list[list[str]]
    capacity: np.ndarray      # int64, -1 for none
    provider: list[str]
    is_free: np.ndarray
    hidden: np.ndarray


@dataclass
class _Log:
    user: np.ndarray
    item: np.ndarray
    action: np.ndarray        # int8 index into ACTIONS
    ts: np.ndarray            # int64 us
    value: np.ndarray         # float64, NaN when absent


Progress = Callable[[str], None]


# --------------------------------------------------------------------------- public API

def generate(config: DemoConfig, *, progress: Progress | None = None) -> DemoData:
    """Generate users, items, interactions and the planted truth for ``config``.

    ``progress`` (optional) is called with each name of :data:`STAGES` as the stage starts.
    """
    _check(config)
    step = progress or (lambda _stage: None)
    window = _window(config)
    user_seed, item_seed, log_seed = np.random.SeedSequence(config.seed).spawn(3)

    step("users")
    users = _make_users(config.users, window, np.random.default_rng(user_seed))
    step("items")
    items = _make_items(config.items, window, np.random.default_rng(item_seed))
    rng = np.random.default_rng(log_seed)
    step("engagements")
    eng_user, eng_item, eng_ts = _draw_engagements(users, items, window, rng)
    step("funnel")
    events = _funnel(eng_user, eng_item, eng_ts, users, items, window, rng)
    del eng_user, eng_item, eng_ts  # free the engagement arrays before the frames are built
    step("frames")
    users_frame = _users_frame(users)
    items_frame = _items_frame(items)
    interactions = _interactions_frame(events, users_frame["user_id"], items_frame["item_id"])
    log.info("generated %d users, %d items, %d interactions", users_frame.height, items_frame.height,
             interactions.height)
    # after the log is drawn: moving a district's few opera items leaves every other draw as it was
    items_frame, no_opera = without_opera(items_frame, users_frame)
    requests, planted = plant_requests(users_frame, window.end_date, TIMEZONE, config.seed, CATEGORIES, no_opera)
    truth = ground_truth(config, window.end_date) | {"requests": planted}
    return DemoData(users_frame, items_frame, interactions, truth, programmes=menu_frame(), requests=requests)


def write_demo(data: DemoData, out_dir: Path) -> dict[str, Path]:
    """Write the tables as Parquet and the truth as JSON into ``out_dir``; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "users": out_dir / "users.parquet",
        "items": out_dir / "items.parquet",
        "interactions": out_dir / "interactions.parquet",
        "ground_truth": out_dir / "ground_truth.json",
        "programmes": out_dir / "programmes.parquet",
        "requests": out_dir / "requests.csv",
    }
    for name in ("users", "items", "interactions", "programmes"):
        _atomic_parquet(getattr(data, name), paths[name])
    tmp_requests = paths["requests"].with_suffix(".csv.tmp")
    data.requests.write_csv(tmp_requests)
    tmp_requests.replace(paths["requests"])
    tmp = paths["ground_truth"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data.ground_truth, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(paths["ground_truth"])
    return paths


def ground_truth(config: DemoConfig, end_date: dt.date) -> dict:
    """The planted effects and the district table, as written to ``ground_truth.json``."""
    names = {d.code: d.name for d in DISTRICTS}
    return {
        "seed": config.seed,
        "end_date": end_date.isoformat(),
        "days": config.days,
        "timezone": TIMEZONE,
        "effects": [
            {"region_code": e.region_code, "region_name": names[e.region_code], "age_band": e.age_band,
             "category": e.category, "multiplier": e.multiplier}
            for e in EFFECTS
        ],
        "districts": [
            {"region_code": d.code, "name": d.name, "lat": d.lat, "lon": d.lon, "urban": d.urban}
            for d in DISTRICTS
        ],
    }


def resolve_end_date(end_date: dt.date | None) -> dt.date:
    """The configured end date, or today in Asia/Shanghai."""
    return end_date or dt.datetime.now(ZoneInfo(TIMEZONE)).date()


# --------------------------------------------------------------------------- set-up

def _check(config: DemoConfig) -> None:
    if config.users < 1 or config.items < len(KINDS) or config.days < 1:
        raise ValueError(f"need users >= 1, items >= {len(KINDS)} and days >= 1, got {config}")


def _window(config: DemoConfig) -> _Window:
    end_date = resolve_end_date(config.end_date)
    first = end_date - dt.timedelta(days=config.days - 1)
    start = _local_midnight_us(first)
    end = _local_midnight_us(end_date + dt.timedelta(days=1)) - 1
    return _Window(end_date, config.days, start, end)


def _local_midnight_us(day: dt.date) -> int:
    moment = dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(TIMEZONE))
    return int(moment.timestamp()) * _US


def _pick(rng: np.random.Generator, probabilities: dict[str, float], size: int) -> np.ndarray:
    """Indices into the keys of ``probabilities`` (in order), drawn ``size`` times."""
    p = np.fromiter(probabilities.values(), dtype=np.float64)
    return rng.choice(len(p), size=size, p=p / p.sum())


def _row_choice(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Column drawn from row ``rows[k]`` of a row-wise CDF matrix, for every k, in one search.

    Row r of the CDF is shifted by r so that the flattened matrix is sorted, and one
    ``searchsorted`` serves all draws; zero-probability columns are never chosen.
    """
    n_rows, n_cols = cdf.shape
    flat = (cdf + np.arange(n_rows, dtype=np.float64)[:, None]).ravel()
    pos = np.searchsorted(flat, rows + u, side="right")
    return np.minimum(pos - rows.astype(np.int64) * n_cols, n_cols - 1)


def _normalised_cdf(weights: np.ndarray) -> np.ndarray:
    """Row-wise CDF; the last column is exactly 1 so that no draw falls off a row."""
    cdf = np.cumsum(weights, axis=1)
    total = cdf[:, -1:]
    cdf = np.divide(cdf, total, out=np.zeros_like(cdf), where=total > 0)
    cdf[:, -1] = 1.0
    return cdf


# --------------------------------------------------------------------------- users

def _make_users(n: int, window: _Window, rng: np.random.Generator) -> _Users:
    population = np.array([d.population for d in DISTRICTS]) ** 0.85
    district = rng.choice(len(DISTRICTS), size=n, p=population / population.sum()).astype(np.int8)
    rural_share = np.array([d.rural_share for d in DISTRICTS])
    rural = rng.random(n) < rural_share[district]
    age = np.where(
        rural,
        rng.choice(len(AGE_BANDS), size=n, p=_AGE_SHARE["rural"]),
        rng.choice(len(AGE_BANDS), size=n, p=_AGE_SHARE["urban"]),
    ).astype(np.int8)
    return _Users(district, age, rural, _registration_times(n, window, rng), _tastes(district, age, rng))


def _registration_times(n: int, window: _Window, rng: np.random.Generator) -> np.ndarray:
    """Most users joined in the three years before the window; some join during it."""
    joined_inside = rng.random(n) < 0.12
    before = window.start - (rng.random(n) * 3 * 365 * _DAY).astype(np.int64)
    span = max(window.end - window.start - _DAY, _HOUR)
    inside = window.start + (rng.random(n) * span).astype(np.int64)
    return np.where(joined_inside, inside, before)


def _tastes(district: np.ndarray, age: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-user category preferences: Dirichlet around the profile of the user's segment.

    A planted effect multiplies its category in the segment's profile before normalising,
    so more of the segment's users count the category among their favourites.
    """
    base = np.array([_BASE_TASTE[c] for c in CATEGORIES])
    by_age = np.array([[base[j] * _AGE_TASTE[a].get(c, 1.0) for j, c in enumerate(CATEGORIES)]
                       for a in AGE_BANDS])
    profile = np.broadcast_to(by_age, (len(DISTRICTS), *by_age.shape)).copy()
    codes = [d.code for d in DISTRICTS]
    for e in EFFECTS:
        profile[codes.index(e.region_code), AGE_BANDS.index(e.age_band), CATEGORIES.index(e.category)] *= \
            e.multiplier
    profile = _TASTE_CONCENTRATION * profile / profile.sum(axis=2, keepdims=True)
    draws = rng.standard_gamma(profile[district, age]) + 1e-12
    return (draws / draws.sum(axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------- items

def _make_items(n: int, window: _Window, rng: np.random.Generator) -> _Items:
    kind = _pick(rng, _KIND_SHARE, n).astype(np.int8)
    kind[: len(KINDS)] = np.arange(len(KINDS))  # every kind exists, however small the catalog
    category = np.empty(n, dtype=np.int8)
    for k, name in enumerate(KINDS):
        members = np.flatnonzero(kind == k)
        options = _KIND_CATEGORIES[name]
        category[members] = np.array([CATEGORIES.index(c) for c in options])[_pick(rng, options, members.size)]
    district = _item_districts(kind, category, rng)
    venue, lat, lon = _venues(district, rng)
    starts, ends = _schedule(kind, category, window, rng)
    live_lo, live_hi = _live_windows(kind, starts, ends, window)
    is_free = rng.random(n) < np.array([_KIND_FREE[k] for k in KINDS])[kind]
    popularity = rng.lognormal(0.0, 1.1, size=n) * np.where(is_free, 1.2, 1.0)
    attention = np.array([_KIND_ATTENTION[k] for k in KINDS])[kind]
    live_days = np.maximum(live_hi - live_lo, 0) / _DAY
    titles, tags = _titles_and_tags(kind, category, rng)
    return _Items(
        kind=kind, category=category, district=district, venue=venue, lat=lat, lon=lon,
        starts=starts, ends=ends, live_lo=live_lo, live_hi=live_hi,
        weight=popularity * attention * live_days, titles=titles, tags=tags,
        capacity=_capacities(kind, rng), provider=_providers(kind, rng),
        is_free=is_free, hidden=rng.random(n) < 0.01,
    )


def _item_districts(kind: np.ndarray, category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """District of each offline item: venue density, biased by category; -1 for digital."""
    venue_weight = np.array([d.venue_weight for d in DISTRICTS])
    weights = np.tile(venue_weight, (kind.size, 1))
    for (cat, code), bias in _SUPPLY_BIAS.items():
        column = [d.code for d in DISTRICTS].index(code)
        weights[category == CATEGORIES.index(cat), column] *= bias
    outer = np.array([not d.urban for d in DISTRICTS])
    weights[np.ix_(kind == KINDS.index("film"), outer)] *= _OUTER_FILM_BIAS
    chosen = _row_choice(_normalised_cdf(weights), np.arange(kind.size), rng.random(kind.size))
    return np.where(kind == KINDS.index("digital"), -1, chosen).astype(np.int8)


def _venues(district: np.ndarray, rng: np.random.Generator) -> tuple[list[str | None], np.ndarray, np.ndarray]:
    """Venues per district (about six items each) and item coordinates near their venue."""
    n = district.size
    venue: list[str | None] = [None] * n
    lat = np.full(n, np.nan)
    lon = np.full(n, np.nan)
    for d_index, d in enumerate(DISTRICTS):
        members = np.flatnonzero(district == d_index)
        if members.size == 0:
            continue
        n_venues = max(2, int(round(members.size / 6)))
        spread = 0.03 if d.urban else 0.08  # outer districts are larger
        v_lat = d.lat + rng.normal(0, spread, n_venues)
        v_lon = d.lon + rng.normal(0, spread * 1.3, n_venues)
        at = rng.integers(0, n_venues, members.size)
        lat[members] = v_lat[at] + rng.normal(0, 0.001, members.size)
        lon[members] = v_lon[at] + rng.normal(0, 0.001, members.size)
        for m, v in zip(members.tolist(), at.tolist(), strict=True):
            venue[m] = f"v{d.code}{v:03d}"
    return venue, lat, lon


def _schedule(kind: np.ndarray, category: np.ndarray, window: _Window,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``starts_at``/``ends_at`` in UTC microseconds (digital items never end)."""
    n = kind.size
    days = window.days
    quarter = 15 * 60 * _US

    def midnight(day: np.ndarray) -> np.ndarray:
        """Local midnight of day ``day`` counted from the window's first day."""
        return window.start + day.astype(np.int64) * _DAY

    # One-evening items (events, opera, film screenings): from the first day up to a month ahead.
    day = rng.integers(0, days + _UPCOMING_DAYS, n)
    daytime_categories = [CATEGORIES.index(c) for c in ("亲子", "讲座", "阅读", "非遗")]
    daytime = np.isin(category, daytime_categories) | (rng.random(n) < 0.15)
    hour = np.where(daytime, rng.choice([9.5, 10.0, 14.0, 14.5, 15.0], n), rng.choice([19.0, 19.5], n))
    start = midnight(day) + (hour * _HOUR).astype(np.int64)
    minutes = np.select(
        [kind == KINDS.index("opera"), kind == KINDS.index("film")],
        [rng.integers(10, 13, n) * 15, rng.integers(6, 11, n) * 15],
        rng.integers(8, 13, n) * 15,
    )
    end = start + minutes.astype(np.int64) * 60 * _US

    # Exhibitions: two weeks to three months, open 09:00 on the first day to 17:00 on the last.
    duration = rng.integers(14, 91, n)
    ex_day = rng.integers(-duration + 1, days + 20)
    ex_start = midnight(ex_day) + 9 * _HOUR
    ex_end = midnight(ex_day + duration - 1) + 17 * _HOUR

    # Digital content: published within the past year (or during the window), never ends.
    pub_day = rng.integers(-365, days, n)
    pub = midnight(pub_day) + rng.integers(8 * 4, 21 * 4, n) * quarter

    is_ex = kind == KINDS.index("exhibition")
    is_digital = kind == KINDS.index("digital")
    starts = np.where(is_ex, ex_start, np.where(is_digital, pub, start))
    ends = np.where(is_ex, ex_end, np.where(is_digital, _NEVER, end))
    return starts.astype(np.int64), ends.astype(np.int64)


def _live_windows(kind: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  window: _Window) -> tuple[np.ndarray, np.ndarray]:
    """When each item can be interacted with, clipped to the activity window."""
    one_evening = np.isin(kind, [KINDS.index(k) for k in ("event", "opera", "film")])
    opens = np.where(one_evening, starts - _EVENT_LEAD_DAYS * _DAY, starts)
    return np.maximum(opens, window.start), np.minimum(ends, window.end)


def _capacities(kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    capacity = np.full(kind.size, -1, dtype=np.int64)
    for name, options in _KIND_CAPACITY.items():
        members = np.flatnonzero(kind == KINDS.index(name))
        capacity[members] = rng.choice(np.array(options), members.size)
    return capacity


def _providers(kind: np.ndarray, rng: np.random.Generator) -> list[str]:
    provider = np.empty(kind.size, dtype=object)
    for k, name in enumerate(KINDS):
        members = np.flatnonzero(kind == k)
        names = np.array(list(_KIND_PROVIDERS[name]), dtype=object)
        provider[members] = names[_pick(rng, _KIND_PROVIDERS[name], members.size)]
    return provider.tolist()


def _titles_and_tags(kind: np.ndarray, category: np.ndarray,
                     rng: np.random.Generator) -> tuple[list[str], list[list[str]]]:
    """Readable Chinese titles (《...》) and 1-3 tags; the catalog is small, a loop is fine."""
    genres = list(_OPERA_GENRES)
    genre_p = np.array([w for w, _ in _OPERA_GENRES.values()])
    genre_pick = rng.choice(len(genres), size=kind.size, p=genre_p / genre_p.sum())
    u = rng.random((kind.size, 6))
    titles: list[str] = []
    tags: list[list[str]] = []
    for i, (k, c) in enumerate(zip(kind.tolist(), category.tolist(), strict=True)):
        kind_name, cat = KINDS[k], CATEGORIES[c]
        if cat == "戏曲":
            genre = genres[genre_pick[i]]
            plays = _OPERA_GENRES[genre][1]
            suffixes = _OPERA_SUFFIXES["digital" if kind_name == "digital" else "opera"]
            titles.append(f"{genre}《{_at(plays, u[i, 0])}》{_at(suffixes, u[i, 1])}")
            tags.append([genre, _at(_OPERA_EXTRA_TAGS, u[i, 2])])
            continue
        themes, suffixes_by_kind, tag_pool = _CONTENT[cat]
        suffixes = suffixes_by_kind.get(kind_name) or next(iter(suffixes_by_kind.values()))
        titles.append(f"《{_at(themes, u[i, 0])}》{_at(suffixes, u[i, 1])}")
        count = 1 + int(u[i, 2] * 3)
        first = int(u[i, 3] * len(tag_pool))
        tags.append([tag_pool[(first + j) % len(tag_pool)] for j in range(min(count, len(tag_pool)))])
    return titles, tags


def _at(options: tuple[str, ...], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


# --------------------------------------------------------------------------- behaviour

def _draw_engagements(users: _Users, items: _Items, window: _Window,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Who looks at what, and when (the first view of each engagement).

    P(item | user) is proportional to taste(category) x popularity x live days x distance
    decay (the planted segment effects live in the tastes). It factorises into a category
    draw per engagement (weighted by the supply the user's district can reach) and an item
    draw within (district, category).
    """
    n_users = users.district.size
    reach = _reach(items)                                     # (districts, items)
    cat_onehot = np.zeros((items.kind.size, len(CATEGORIES)))
    cat_onehot[np.arange(items.kind.size), items.category] = 1.0
    supply = (reach * items.weight) @ cat_onehot              # (districts, categories)

    per_user = users.taste * supply[users.district]
    active_from = np.maximum(users.registered, window.start)
    active_share = np.clip((window.end - active_from) / (window.end - window.start), 0.0, 1.0)
    active_share[per_user.sum(axis=1) <= 0] = 0.0  # nothing live within reach: no engagements
    activity = rng.lognormal(-0.32, 0.8, n_users) * np.array(_AGE_ACTIVITY)[users.age]
    counts = rng.poisson(_ENGAGEMENTS_PER_DAY * window.days * activity * active_share)
    eng_user = np.repeat(np.arange(n_users, dtype=np.int32), counts)
    del counts, activity

    category = _row_choice(_normalised_cdf(per_user), eng_user, rng.random(eng_user.size))
    del per_user
    eng_item = _item_choice(users.district[eng_user], category, reach, items, rng)
    del category

    lo = np.maximum(items.live_lo[eng_item], active_from[eng_user])
    hi = items.live_hi[eng_item]
    keep = (lo <= hi) & (items.weight[eng_item] > 0)
    eng_user, eng_item, lo, hi = eng_user[keep], eng_item[keep], lo[keep], hi[keep]
    return eng_user, eng_item, _first_view_times(lo, hi, items.kind[eng_item], rng)


def _reach(items: _Items) -> np.ndarray:
    """Distance decay from each district's centroid to each item (1 for digital items)."""
    d_lat = np.radians(np.array([d.lat for d in DISTRICTS]))[:, None]
    d_lon = np.radians(np.array([d.lon for d in DISTRICTS]))[:, None]
    i_lat, i_lon = np.radians(items.lat)[None, :], np.radians(items.lon)[None, :]
    h = np.sin((i_lat - d_lat) / 2) ** 2 + np.cos(d_lat) * np.cos(i_lat) * np.sin((i_lon - d_lon) / 2) ** 2
    km = 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))
    scale = np.array([_TRAVEL_SCALE_KM[d.urban] for d in DISTRICTS])[:, None]
    return np.where(np.isnan(km), 1.0, np.exp(-km / scale))


def _item_choice(district: np.ndarray, category: np.ndarray, reach: np.ndarray, items: _Items,
                 rng: np.random.Generator) -> np.ndarray:
    """An item per engagement, drawn within its (user district, category) group by weight.

    The groups' CDFs are laid end to end, group g shifted by g, so one ``searchsorted``
    draws every engagement.
    """
    n_districts, n_categories = len(DISTRICTS), len(CATEGORIES)
    by_category = [np.flatnonzero(items.category == c) for c in range(n_categories)]
    members, cdfs, offsets = [], [], [0]
    for d in range(n_districts):
        for c in range(n_categories):
            group = by_category[c]
            w = np.cumsum(items.weight[group] * reach[d, group])
            total = w[-1] if w.size else 0.0
            cdf = w / total if total > 0 else np.ones_like(w)
            if cdf.size:
                cdf[-1] = 1.0
            members.append(group)
            cdfs.append(cdf + (d * n_categories + c))
            offsets.append(offsets[-1] + group.size)
    flat_items = np.concatenate(members)
    flat_cdf = np.concatenate(cdfs)
    starts = np.asarray(offsets, dtype=np.int64)
    g = district.astype(np.int64) * n_categories + category
    pos = np.searchsorted(flat_cdf, g + rng.random(g.size), side="right")
    pos = np.clip(pos, starts[g], starts[g + 1] - 1)  # guard against rounding at a group's edge
    return flat_items[pos].astype(np.int32)


def _first_view_times(lo: np.ndarray, hi: np.ndarray, kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A time in [lo, hi], busier close to an event and at the evening peak of the day."""
    frac = rng.random(lo.size)
    one_evening = np.isin(kind, [KINDS.index(k) for k in ("event", "opera", "film")])
    frac = np.where(one_evening, frac ** 0.6, frac)  # bookings pick up as the day approaches
    t = lo + (frac * (hi - lo)).astype(np.int64)
    # Move the time of day to a draw from the hourly profile when that stays inside [lo, hi].
    hourly = np.cumsum(_HOURLY) / np.sum(_HOURLY)
    hour = np.searchsorted(hourly, rng.random(lo.size), side="right")
    offset = _local_offset_us()
    local_day = (t + offset) // _DAY
    moved = local_day * _DAY - offset + hour * _HOUR + (rng.random(lo.size) * _HOUR).astype(np.int64)
    return np.where((moved >= lo) & (moved <= hi), moved, t)


def _local_offset_us() -> int:
    """UTC offset of Asia/Shanghai (fixed, no daylight saving since 1991)."""
    offset = dt.datetime(2020, 1, 1, tzinfo=ZoneInfo(TIMEZONE)).utcoffset()
    return int(offset.total_seconds()) * _US if offset else 0


def _funnel(user: np.ndarray, item: np.ndarray, view_ts: np.ndarray, users: _Users, items: _Items,
            window: _Window, rng: np.random.Generator) -> _Log:
    """Expand each engagement into view -> click -> favorite/share/reserve -> attend -> rate.

    Deeper steps are likelier when the item's category is one of the user's favourites, so
    the strong signals carry the taste a recommender should learn.
    """
    n = user.size
    code = {a: np.int8(i) for i, a in enumerate(ACTIONS)}
    kind = items.kind[item]
    taste = users.taste[user, items.category[item]]
    fit = taste / users.taste.max(axis=1)[user]
    hi = items.live_hi[item]
    digital = kind == KINDS.index("digital")

    parts: list[tuple[np.ndarray, np.ndarray, np.int8, np.ndarray, np.ndarray | None]] = []
    parts.append((user, item, code["view"], view_ts, None))

    clicked = rng.random(n) < 0.30 + 0.35 * fit
    c_idx = np.flatnonzero(clicked)
    click_ts = _after(view_ts[c_idx], 20, hi[c_idx], rng)
    parts.append((user[c_idx], item[c_idx], code["click"], click_ts, None))

    c_fit, c_digital, c_hi = fit[c_idx], digital[c_idx], hi[c_idx]
    r = rng.random((c_idx.size, 5))
    fav = r[:, 0] < np.where(c_digital, 0.15 + 0.25 * c_fit, 0.08 + 0.10 * c_fit)
    parts.append(_step(user, item, c_idx, fav, code["favorite"], _after(click_ts, 60, c_hi, rng)))
    share = r[:, 1] < 0.04 + 0.04 * c_fit
    parts.append(_step(user, item, c_idx, share, code["share"], _after(click_ts, 120, c_hi, rng)))
    rate_ts = _delayed(click_ts, 1800, rng)  # ratings that would fall after closing are not given
    digital_rate = c_digital & (r[:, 2] < 0.08) & (rate_ts <= c_hi)
    parts.append(_step(user, item, c_idx, digital_rate, code["rate"], rate_ts, _ratings(c_fit, rng)))

    reserve = ~c_digital & (r[:, 3] < 0.20 + 0.35 * c_fit)
    reserve_ts = _after(click_ts, 90, c_hi, rng)
    parts.append(_step(user, item, c_idx, reserve, code["reserve"], reserve_ts))

    # Attendance: only on or after the start, never after the item ends or the window closes.
    r_idx = c_idx[reserve]
    att_ts, came = _attendance(reserve_ts[reserve], items, item[r_idx], window, rng)
    came &= r[reserve, 4] < 0.75  # no-shows
    parts.append((user[r_idx[came]], item[r_idx[came]], code["attend"], att_ts[came], None))
    a_idx = r_idx[came]
    a_rate_ts = _delayed(att_ts[came], 3600, rng)
    rated = (rng.random(a_idx.size) < 0.15) & (a_rate_ts <= hi[a_idx])
    parts.append(_step(user, item, a_idx, rated, code["rate"], a_rate_ts, _ratings(fit[a_idx], rng)))
    return _dedupe_bookings(_concat(parts), items.kind.size)


def _delayed(base: np.ndarray, mean_seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A moment after ``base``, with an exponential delay of ``mean_seconds`` on average."""
    return base + (rng.exponential(mean_seconds, base.size) * _US).astype(np.int64)


def _after(base: np.ndarray, mean_seconds: float, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A moment shortly after ``base``, never beyond ``hi`` (the funnel's quick steps)."""
    return np.minimum(_delayed(base, mean_seconds, rng), hi)


def _step(user: np.ndarray, item: np.ndarray, idx: np.ndarray, chosen: np.ndarray, action: np.int8,
          ts: np.ndarray, value: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.int8, np.ndarray, np.ndarray | None]:
    rows = idx[chosen]
    return user[rows], item[rows], action, ts[chosen], None if value is None else value[chosen]


def _ratings(fit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-5 stars, higher for a favourite category."""
    stars = np.rint(2.6 + 2.2 * fit + rng.normal(0, 0.8, fit.size))
    return np.clip(stars, 1, 5).astype(np.float64)


def _attendance(reserve_ts: np.ndarray, items: _Items, item: np.ndarray, window: _Window,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """When a booking is used, and whether that moment falls inside the item's window.

    One-evening items: arriving from the start (or the booking, if later) for 45 minutes.
    Exhibitions: a visit in opening hours (09:00-17:00) within five days of booking. Visits
    that would fall after closing or after the end date have not happened (yet).
    """
    starts, ends = items.starts[item], np.minimum(items.ends[item], window.end)
    exhibition = items.kind[item] == KINDS.index("exhibition")
    earliest = np.maximum(starts, reserve_ts)
    span = np.maximum(ends - earliest, 0)
    u = rng.random(item.size)
    evening = earliest + (u * np.minimum(span, 45 * 60 * _US)).astype(np.int64)
    offset = _local_offset_us()
    booking_day = (reserve_ts + offset) // _DAY
    visit_day = booking_day + rng.integers(0, 6, item.size)
    visit = visit_day * _DAY - offset + 9 * _HOUR + (u * 8 * _HOUR).astype(np.int64)
    visit = np.where(visit < reserve_ts, visit + _DAY, visit)  # booked after today's visit time
    ts = np.where(exhibition, visit, evening)
    possible = (starts <= window.end) & (ts >= starts) & (ts <= ends) & (ts >= reserve_ts)
    return ts, possible


def _concat(parts: list[tuple[np.ndarray, np.ndarray, np.int8, np.ndarray, np.ndarray | None]]) -> _Log:
    user = np.concatenate([p[0] for p in parts])
    item = np.concatenate([p[1] for p in parts])
    action = np.concatenate([np.full(p[0].size, p[2], dtype=np.int8) for p in parts])
    ts = np.concatenate([p[3] for p in parts])
    value = np.concatenate([p[4] if p[4] is not None else np.full(p[0].size, np.nan) for p in parts])
    return _Log(user, item, action, ts, value)


def _dedupe_bookings(events: _Log, n_items: int) -> _Log:
    """Keep a user's first reserve and first attend of an item (repeat views stay)."""
    booking = np.flatnonzero(np.isin(events.action, [ACTIONS.index("reserve"), ACTIONS.index("attend")]))
    booking = booking[np.argsort(events.ts[booking], kind="stable")]
    key = (events.user[booking].astype(np.int64) * n_items + events.item[booking]) * 8 + events.action[booking]
    _, first = np.unique(key, return_index=True)
    drop = np.ones(booking.size, dtype=bool)
    drop[first] = False
    keep = np.ones(events.user.size, dtype=bool)
    keep[booking[drop]] = False
    return _Log(events.user[keep], events.item[keep], events.action[keep], events.ts[keep], events.value[keep])


# --------------------------------------------------------------------------- frames

def _utc(values: np.ndarray, name: str) -> pl.Series:
    return pl.Series(name, values, dtype=pl.Int64).cast(schemas.UTC_TIME)


def _ids(prefix: str, n: int) -> pl.Series:
    width = max(6, len(str(n - 1)))
    return pl.select((pl.lit(prefix) + pl.int_range(n).cast(pl.String).str.zfill(width)).alias("id")).to_series()


def _users_frame(users: _Users) -> pl.DataFrame:
    n = users.district.size
    frame = pl.DataFrame({
        "user_id": _ids("u", n),
        "region_code": pl.Series([d.code for d in DISTRICTS]).gather(users.district),
        "age_band": pl.Series(AGE_BANDS).gather(users.age),
        "area_type": pl.Series(["urban", "rural"]).gather(users.rural.astype(np.int8)),
        "registered_at": _utc(users.registered, "registered_at"),
    })
    return frame.select([pl.col(c).cast(t) for c, t in schemas.USERS.items()])


def _items_frame(items: _Items) -> pl.DataFrame:
    n = items.kind.size
    number = pl.Series(np.arange(n)).cast(pl.String).str.zfill(max(5, len(str(n - 1))))
    prefix = pl.Series([_KIND_PREFIX[k] for k in KINDS]).gather(items.kind)
    codes = pl.Series([d.code for d in DISTRICTS] + [None])  # index -1 -> no region
    digital = items.kind == KINDS.index("digital")
    frame = pl.DataFrame({
        "item_id": prefix + number,
        "title": items.titles,
        "kind": pl.Series(KINDS).gather(items.kind),
        "category": pl.Series(CATEGORIES).gather(items.category),
        "tags": pl.Series(items.tags, dtype=pl.List(pl.String)),
        "region_code": codes.gather(np.where(items.district < 0, len(DISTRICTS), items.district)),
        "venue_id": pl.Series(items.venue, dtype=pl.String),
        "lat": pl.Series(np.round(items.lat, 6), nan_to_null=True),
        "lon": pl.Series(np.round(items.lon, 6), nan_to_null=True),
        "starts_at": _utc(items.starts, "starts_at"),
        "ends_at": _utc(np.where(digital, 0, items.ends), "ends_at"),
        "capacity": pl.Series(items.capacity),
        "provider": items.provider,
        "is_free": items.is_free,
        "hidden": items.hidden,
        **_audience_columns(len(items.kind)),
        "series_id": pl.Series([None] * len(items.kind), dtype=pl.String),  # the demo links no sessions
    })
    frame = frame.with_columns(
        pl.when(pl.Series(digital)).then(None).otherwise(pl.col("ends_at")).alias("ends_at"),
        pl.when(pl.col("capacity") < 0).then(None).otherwise(pl.col("capacity")).alias("capacity"),
    )
    return frame.select([pl.col(c).cast(t) for c, t in schemas.ITEMS.items()])


ADULTS_ONLY_EVERY = 97
"""Every 97th item is for adults only (``min_age`` 18), so the minors rule has something to act on."""
EDITORIAL_EVERY = 211
"""Every 211th item is in the editorial pool."""


def _audience_columns(n: int) -> dict[str, pl.Series]:
    """``min_age`` and ``editorial`` by position: no random draw, so every other column stays as it was."""
    position = np.arange(n)
    adults = position % ADULTS_ONLY_EVERY == ADULTS_ONLY_EVERY - 1
    return {"min_age": pl.Series(np.where(adults, 18, 0)).cast(pl.Int64).set(pl.Series(~adults), None),
            "editorial": pl.Series(position % EDITORIAL_EVERY == EDITORIAL_EVERY - 1)}


def _interactions_frame(events: _Log, user_ids: pl.Series, item_ids: pl.Series) -> pl.DataFrame:
    """The log in time order (a stable sort, so ties keep the generation order)."""
    coded = pl.DataFrame({
        "user": events.user, "item": events.item, "action": events.action,
        "ts": _utc(events.ts, "ts"), "value": pl.Series(events.value, nan_to_null=True),
    }).sort("ts", maintain_order=True)
    frame = pl.DataFrame({
        "user_id": user_ids.gather(coded["user"]),
        "item_id": item_ids.gather(coded["item"]),
        "action": pl.Series(ACTIONS).gather(coded["action"]),
        "ts": coded["ts"],
        "value": coded["value"],
    })
    return frame.select([pl.col(c).cast(t) for c, t in schemas.INTERACTIONS.items()])


def _atomic_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write next to the target and rename, so a crash never leaves half a file."""
    tmp = path.with_suffix(".parquet.tmp")
    frame.write_parquet(tmp, compression="zstd")
    tmp.replace(path)
