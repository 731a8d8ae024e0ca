"""Attribution against a hand-computed case: window edges, two lists holding the same item, named lists."""

from __future__ import annotations

from recsys.attribution import DAY, HOUR, AttributionSettings, Interaction, ServedList, attribute

L1 = ServedList("L1", "a", 0.0, ("x", "y"))
L2 = ServedList("L2", "a", 10 * HOUR, ("y", "z"))
L3 = ServedList("L3", "b", 0.0, ("x",))

CASES = [  # (interaction, the list it counts for, worked out by hand)
    (Interaction("a", "x", "click", 24 * HOUR), "L1"),            # right edge of the click window counts
    (Interaction("a", "x", "click", 24 * HOUR + 1), None),        # a second past it does not
    (Interaction("a", "y", "click", 5 * HOUR), "L1"),             # L2 not served yet
    (Interaction("a", "y", "click", 12 * HOUR), "L2"),            # both hold y: the latest wins
    (Interaction("a", "y", "click", 34 * HOUR + 1), None),        # past both windows
    (Interaction("a", "y", "reserve", 10 * HOUR + 14 * DAY), "L2"),  # reserve: 14 days, edge included
    (Interaction("a", "x", "reserve", 14 * DAY + 1), None),
    (Interaction("a", "x", "attend", 3 * DAY), "L1"),
    (Interaction("b", "x", "click", 1 * HOUR), "L3"),             # another user's list never counts
    (Interaction("a", "z", "click", 9 * HOUR), None),             # before the only list holding z
    (Interaction("a", "z", "click", 10 * HOUR), "L2"),            # the moment it was served counts
    (Interaction("a", "x", "view", 1 * HOUR), None),              # no window for views
    (Interaction("a", "y", "click", 12 * HOUR, "L1"), "L1"),      # a named list that qualifies wins
    (Interaction("a", "z", "click", 11 * HOUR, "L3"), "L2"),      # a name that does not is ignored
]


def test_hand_computed_case() -> None:
    got = attribute([L3, L2, L1], [event for event, _ in CASES])
    assert got == [expected for _, expected in CASES]


def test_windows_are_configurable() -> None:
    settings = AttributionSettings(windows={"click": 1 * HOUR, "view": 2 * HOUR})
    events = [Interaction("a", "x", "click", 2 * HOUR), Interaction("a", "x", "view", 2 * HOUR),
              Interaction("a", "x", "reserve", 1 * HOUR)]
    assert attribute([L1], events, settings) == [None, "L1", None]
