"""Numbers for people: as many decimals as it takes to tell values apart, and no more.

A metric printed to one decimal reads "0.6 beats 0.6"; printed to six, a table of four-digit
volumes is noise. ``decimals`` picks, for the values shown side by side, at least ``significant``
digits of the smallest and then one more decimal at a time until different values print differently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def decimals(values: Iterable[float | None], significant: int = 3, most: int = 6) -> int:
    """Decimals to print ``values`` with, together (None and non-finite values do not count)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    nonzero = [abs(v) for v in finite if v != 0]
    places = max(0, significant - 1 - math.floor(math.log10(min(nonzero)))) if nonzero else 0
    while places < most and len({round(v, places) for v in finite}) < len(set(finite)):
        places += 1
    return min(places, most)


def side_by_side(values: Iterable[float], significant: int = 3) -> list[str]:
    """The values as text with one shared number of decimals (a column, or a comparison)."""
    values = list(values)
    places = decimals(values, significant)
    return [f"{v:.{places}f}" for v in values]
