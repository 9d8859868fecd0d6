"""A request's query string checked (daemon/api.py, routes/common.py's `query`): a parameter the route does
not take, or one given twice, refused naming it (400, bad_parameter); a yes/no parameter that is not true,
false, 1 or 0 refused, never read as no; the rest checked against the route's query model (api/), as
daemon/checker.py words its failures."""

from __future__ import annotations

from functools import cache
from typing import Any, get_type_hints

from ..api.types import QUERY_BOOLS, QueryBool
from ..storage.errors import BadParameter
from .checker import checker


@cache
def _yes_no(model: Any) -> tuple[str, ...]:
    """The yes/no (QueryBool) parameters of a query model."""
    return tuple(k for k, t in get_type_hints(model, include_extras=True).items() if t == QueryBool)


def query_names(model: Any) -> frozenset[str]:
    """The parameters a query model names (none for a route without one)."""
    return frozenset(get_type_hints(model)) if model is not None else frozenset()


def refuse_unknown_query(route: str, names: frozenset[str], q) -> None:
    """A query parameter the route does not take is a 400 (bad_parameter) naming it and the ones it takes:
    a typo (`?stauts=ended`) must not quietly answer as if it were absent. So is one given twice (none takes
    a list): `?status=active&status=ended` must not quietly answer for one of them."""
    seen = set()
    for k, _ in q.items():  # (a multidict's keys: each once)
        if k not in names:
            takes = f"it takes {', '.join(sorted(names))}" if names else "it takes none"
            raise BadParameter(f"unknown query parameter {k!r:.60} on {route}: {takes}", parameter=k[:60])
        if k in seen:
            raise BadParameter(
                f"query parameter {k} is given twice on {route}: it takes one value (give it once)", parameter=k
            )
        seen.add(k)


def query(model: Any, q) -> dict:
    """A query string checked against its model (`limit` must be a whole number, ...). A yes/no parameter
    that is not true, false, 1 or 0 is a 400 (bad_parameter) naming it: never read as no."""
    for k in _yes_no(model):
        values = q.getall(k, []) if hasattr(q, "getall") else ([q[k]] if k in q else [])
        for raw in values:
            if raw not in QUERY_BOOLS:
                raise BadParameter(
                    f"query parameter {k} must be true, false, 1 or 0 (e.g. {k}=true), not {raw!r:.60}",
                    parameter=k,
                )
    return checker(model)(dict(q), "query parameter ")
