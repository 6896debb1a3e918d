"""The console's pages: each module exposes ``PAGE`` (a :class:`~services.dashboard.pages.base.Page`)."""

from services.dashboard.pages.base import Component, Page, PageContext

__all__ = ["Component", "Page", "PageContext"]
