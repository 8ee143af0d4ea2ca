"""Octue's exception classes as counterparts of ours, for code ported from Octue's SDK.

Octue's exceptions derive from `octue.exceptions.OctueSDKException`, not from builtins we could share, so an
`except octue.exceptions.CloudLocationNotSpecified:` clause cannot catch our error by subclassing. When (and only
when) Octue's SDK is already imported in the process, `OctueDagsterError.__new__` gives the raised error a class
that derives from both ours and Octue's counterpart: `except CloudLocationNotSpecifiedError`, `except ValueError` and
`except octue.exceptions.CloudLocationNotSpecified` all catch it. This module never imports Octue.
"""

from __future__ import annotations

import sys
from functools import lru_cache

#: Our error class name -> the name of Octue's counterpart in `octue.exceptions`. A subclass inherits its base's.
COUNTERPARTS = {
    "InvalidInputError": "InvalidInputException",
    "CloudLocationNotSpecifiedError": "CloudLocationNotSpecified",
    "ReadOnlyDatafileError": "ReadOnlyResource",
    "DatafileNotFoundError": "FileNotFoundException",
    "UnexpectedNumberOfResultsError": "UnexpectedNumberOfResultsException",
    "InvalidLabelError": "InvalidLabelException",
    "InvalidTagError": "InvalidTagException",
    "InvalidFilterError": "InvalidInputException",
}


def _counterpart_name(cls: type) -> str | None:
    for klass in cls.__mro__:
        if klass.__module__ == "octue_dagster.exceptions" and klass.__name__ in COUNTERPARTS:
            return COUNTERPARTS[klass.__name__]
    return None


@lru_cache(maxsize=None)
def _combined(cls: type, octue_class: type) -> type:
    return type(cls.__name__, (cls, octue_class), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})


def with_octue_counterpart(cls: type) -> type:
    """`cls`, or, if Octue's SDK is imported and `cls` has a counterpart there, a class deriving from both."""
    octue_exceptions = sys.modules.get("octue.exceptions")
    if octue_exceptions is None or cls.__module__ != "octue_dagster.exceptions":
        return cls
    name = _counterpart_name(cls)
    octue_class = getattr(octue_exceptions, name, None) if name else None
    if not isinstance(octue_class, type) or issubclass(cls, octue_class):
        return cls
    try:
        return _combined(cls, octue_class)
    except TypeError:  # incompatible layouts: keep ours
        return cls


__all__ = ["COUNTERPARTS", "with_octue_counterpart"]
