"""Adds `PeftType.BOTTLENECK` at import time.

`peft.utils.register_peft_method` only accepts names that are already members of `PeftType`, and Python
enums cannot be extended through their public API. This inserts one member the way `EnumType` itself does
when it builds the class (the member maps, the name list, the class attribute), so `PeftType("BOTTLENECK")`,
`PeftType.BOTTLENECK`, iteration and JSON round trips of `adapter_config.json` behave like any member.

Editing another package's enum is only safe on versions it was tried with: the patch checks that the
installed peft is in `TESTED_PEFT_VERSIONS` first and raises `UntestedPeftVersionError` otherwise.
"""

from __future__ import annotations

import enum

import peft
from packaging.version import Version
from peft.utils.peft_types import PeftType

NAME = "BOTTLENECK"
#: peft versions the patch and the tuner were tested with: 0.18.0 (the first with the BaseTuner defaults the
#: tuner relies on, and the first that imports with transformers 5) up to 0.21.x.
TESTED_PEFT_VERSIONS = (Version("0.18.0"), Version("0.22"))  # from, up to (not including)


class UntestedPeftVersionError(ImportError):
    """The installed peft is not one hm_hf's PeftType patch was tested with; the message says what to install."""


def check_peft_version(installed: str | None = None) -> Version:
    """The installed peft version; raises `UntestedPeftVersionError` outside `TESTED_PEFT_VERSIONS`."""
    text = installed if installed is not None else getattr(peft, "__version__", "0")
    version = Version(text)
    low, high = TESTED_PEFT_VERSIONS
    if not low <= Version(version.base_version) < high:
        raise UntestedPeftVersionError(
            f"hm_hf registers its bottleneck adapter by adding a member to peft's PeftType enum, which was tested "
            f"with peft {low} up to (not including) {high}; peft {text} is installed. Install a tested version: "
            f"pip install 'peft>={low},<{high}'"
        )
    return version


def ensure_peft_type() -> PeftType:
    """Returns `PeftType.BOTTLENECK`, creating it on first call (idempotent); checks the peft version first."""
    check_peft_version()
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
