"""The pure core of the cultural-resource recommendation engine.

Data contract, id maps, catalog, models behind one interface, ranking and filters,
metrics and artifact save/load. Depends on numpy, scipy, implicit and pydantic only.
"""

__version__ = "0.1.0"
