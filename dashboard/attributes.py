"""HTML attributes whose names Python keywords cannot spell (``aria-*``, ``data-*``)."""

from __future__ import annotations

from typing import Any


def attrs(**values: str) -> Any:  # splatted into Dash components' **kwargs
    """Turn ``aria_label="x"`` into ``{"aria-label": "x"}`` for a Dash component.

    Examples:
        >>> attrs(aria_label="Pages", data_device="aq-1")
        {'aria-label': 'Pages', 'data-device': 'aq-1'}
    """
    return {name.replace("_", "-"): value for name, value in values.items()}
