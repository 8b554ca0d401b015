"""Test helpers for the decoded-image cache."""

from __future__ import annotations

import pytest

from dogbreeds import cache as cache_module
from dogbreeds.decode import load_rgb


class DecodeCounter:
    """Wraps dogbreeds.cache.load_rgb to count the files decoded in this process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        monkeypatch.setattr(cache_module, "load_rgb", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return load_rgb(*args, **kwargs)
