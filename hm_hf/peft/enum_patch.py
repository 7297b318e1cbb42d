"""Adds `PeftType.BOTTLENECK` at import time.

`peft.utils.register_peft_method` only accepts names that are already members of `PeftType`, and Python
enums cannot be extended through their public API. This inserts one member the way `EnumType` itself does
when it builds the class (the member maps, the name list, the class attribute), so `PeftType("BOTTLENECK")`,
`PeftType.BOTTLENECK`, iteration and JSON round trips of `adapter_config.json` behave like any member.
"""

from __future__ import annotations

import enum

from peft.utils.peft_types import PeftType

NAME = "BOTTLENECK"


def ensure_peft_type() -> PeftType:
    """Returns `PeftType.BOTTLENECK`, creating it on first call (idempotent)."""
    existing = PeftType.__members__.get(NAME)
    if existing is not None:
        return existing
    member = str.__new__(PeftType, NAME)
    member._name_ = NAME
    member._value_ = NAME
    member.__objclass__ = PeftType
    member._sort_order_ = len(PeftType._member_names_)
    # class attribute first: EnumType.__setattr__ refuses to rebind names listed in _member_map_
    type.__setattr__(PeftType, NAME, member)
    PeftType._member_map_[NAME] = member
    PeftType._value2member_map_[NAME] = member
    PeftType._member_names_.append(NAME)
    # Python >= 3.12 keeps an extra list of hashable values used by `in` checks
    if isinstance(getattr(PeftType, "_hashable_values_", None), list):
        PeftType._hashable_values_.append(NAME)
    assert PeftType(NAME) is member and PeftType[NAME] is member and member in list(PeftType)
    assert isinstance(member, enum.Enum) and member == NAME
    return member
