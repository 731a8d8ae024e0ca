"""The residents' own controls: personalisation and senior mode, and their interest tags.

- ``GET /v1/users/{user_id}/settings``: the current settings (scope ``read``);
- ``PUT /v1/users/{user_id}/settings``: ``{"personalized": false}`` (and back), ``{"senior_mode": true}``
  (scope ``write:interactions``);
- ``GET /v1/users/{user_id}/profile``: the interest tags (scope ``read``);
- ``DELETE /v1/users/{user_id}/profile/tags/{tag}``: remove a tag (scope ``write:interactions``);
- ``PUT /v1/users/{user_id}/profile/tags/{tag}``: declare an interest (scope ``write:interactions``).

A change is durable (the home's controls log, :mod:`recsys.controls`) before the answer and
holds from the resident's next request on, in every worker (:mod:`serving.user_controls`).
Writes are made by the app that signed the resident in, in their name, like their posted
interactions: hence the same scope. A user erased on request has nothing kept: their reads
answer as for an unknown resident, their writes are refused (409).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from pydantic.json_schema import SkipJsonSchema

from recsys import controls
from recsys.profile import derive_tags, resolve
from recsys.query import Filters, UserContext
from serving.deps import InteractionsWriterDep, PersonalReaderDep, ServedDep, Services, ServicesDep
from serving.erasure import ERASED_DETAIL, ERASED_RESPONSE
from serving.routers.recommendations import Id

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["user controls"])

TagText = Annotated[str, Path(min_length=1, max_length=128, description="a tag key (category:戏曲) or its name (戏曲)")]
PROFILE_LIST = 20
"""How many of the resident's current list items ``in_recommendations`` is measured on."""


class SettingsChange(BaseModel):
    """What to change; a setting not given keeps its value."""

    # The schema states what the validator below checks (at least one setting, none of them null),
    # so a client generated from it cannot build a body the server refuses.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"personalized": False}],
                                                                 "minProperties": 1})

    personalized: StrictBool | SkipJsonSchema[None] = Field(
        None, description="false: lists no longer use the resident's characteristics (history, district, "
                          "age band): city-wide popularity and editorial picks")
    senior_mode: StrictBool | SkipJsonSchema[None] = Field(
        None, description="for 60+ residents: favour nearby, daytime, free and digital items")

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        # "not given" keeps a setting; a null would be a third value the schema does not offer
        if isinstance(data, dict):
            for name in ("personalized", "senior_mode"):
                if name in data and data[name] is None:
                    raise ValueError(f"{name}: give true or false, or leave it out")
        return data

    @model_validator(mode="after")
    def _something(self) -> SettingsChange:
        if self.personalized is None and self.senior_mode is None:
            raise ValueError("give personalized and/or senior_mode")
        return self


class UserSettings(BaseModel):
    user_id: str
    personalized: bool
    senior_mode: bool


class InterestTag(BaseModel):
    tag: str = Field(description="the key to remove or declare it by: facet:value")
    facet: str
    value: str
    label: str = Field(description="plain Chinese, e.g. 戏曲 · 常看")
    weight: float = Field(description="share of the resident's history weight carrying it (0..1)")
    evidence: int = Field(description="history items carrying it")
    in_recommendations: float = Field(description="share of the resident's current list carrying it")
    declared: bool


class Profile(BaseModel):
    user_id: str
    model_version: str
    tags: list[InterestTag]
    removed_tags: list[str] = Field(description="tags the resident removed (until they engage with one again)")


class TagChanged(BaseModel):
    user_id: str
    tags: list[str] = Field(description="the tag keys the path named")
    status: str


@router.get("/users/{user_id:id}/settings", response_model=UserSettings)
async def get_settings(user_id: Id, _: PersonalReaderDep, svc: ServicesDep) -> UserSettings:
    """The resident's current settings (defaults until they change one)."""
    state = controls.DEFAULT if user_id in svc.erased else svc.controls.of(user_id)
    return UserSettings(user_id=user_id, **state.settings())


@router.put("/users/{user_id:id}/settings", response_model=UserSettings, responses=ERASED_RESPONSE)
def put_settings(user_id: Id, change: SettingsChange, _: InteractionsWriterDep, svc: ServicesDep) -> UserSettings:
    """Switch personalisation or senior mode; holds from the next request on, in every worker."""
    values = change.model_dump(exclude_none=True)
    state = _record(svc, controls.record(user_id, controls.SETTINGS, **values), controls.SETTINGS)
    return UserSettings(user_id=user_id, **state.settings())


@router.get("/users/{user_id:id}/profile", response_model=Profile)
def get_profile(user_id: Id, _: PersonalReaderDep, served: ServedDep, svc: ServicesDep) -> Profile:
    """The interest tags the engine uses for this resident, from their history and the model."""
    if user_id in svc.erased:
        return Profile(user_id=user_id, model_version=served.version, tags=[], removed_tags=[])
    engine = served.engine
    state = svc.controls.of(user_id)
    context = UserContext(live_weights=svc.live.weights_for(user_id, engine.catalog.items),
                          dismissed=svc.live.dismissed_for(user_id, engine.catalog.items), controls=state)
    _, history = engine.history(user_id, context)
    listed = engine.for_user(user_id, PROFILE_LIST, Filters(at=time.time()), diversity=0.0, context=context)
    tags = derive_tags(engine.catalog, history.indices, history.data, removed=state.removed_tags,
                       declared=state.declared_tags, recommended=[r.item for r in listed.items])
    return Profile(user_id=user_id, model_version=served.version, tags=[InterestTag(**t.to_dict()) for t in tags],
                   removed_tags=sorted(state.removed_tags))


@router.delete("/users/{user_id:id}/profile/tags/{tag}", response_model=TagChanged,
               responses={404: {"description": "no such tag in the catalogue"}, **ERASED_RESPONSE})
def remove_tag(user_id: Id, tag: TagText, _: InteractionsWriterDep, served: ServedDep,
               svc: ServicesDep) -> TagChanged:
    """Remove a tag: its items leave the resident's lists and its history stops driving them,
    until the resident engages with such an item again."""
    return _change_tag(svc, served.engine.catalog, user_id, tag, controls.REMOVE_TAG, "removed")


@router.put("/users/{user_id:id}/profile/tags/{tag}", response_model=TagChanged,
            responses={404: {"description": "no such tag in the catalogue"}, **ERASED_RESPONSE})
def declare_tag(user_id: Id, tag: TagText, _: InteractionsWriterDep, served: ServedDep,
                svc: ServicesDep) -> TagChanged:
    """Declare an interest (a new resident may pick theirs); a removed tag is restored."""
    return _change_tag(svc, served.engine.catalog, user_id, tag, controls.DECLARE_TAG, "declared")


def _change_tag(svc: Services, catalog: Any, user_id: str, tag: str, op: str, done: str) -> TagChanged:
    keys = resolve(tag, catalog)
    if not keys:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no category, kind or district {tag!r} in the catalogue")
    for key in keys:
        _record(svc, controls.record(user_id, op, tag=key), op)
    return TagChanged(user_id=user_id, tags=keys, status=done)


def _record(svc: Services, entry: dict[str, Any], control: str) -> controls.UserControls:
    """Append one choice durably: 409 for an erased user, 503 when it cannot be written."""
    user_id = str(entry["user_id"])
    if user_id in svc.erased:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=ERASED_DETAIL)
    try:
        state = svc.controls.append(entry)
    except OSError as exc:
        log.exception("could not record a resident's choice")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail="could not record the change; nothing changed, retry later") from exc
    svc.metrics.control_changes.labels(control).inc()
    return state
