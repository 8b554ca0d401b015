"""A Gradio image input that hands the uploaded file to the handler undecoded.

gr.Image opens every upload with Pillow before the handler runs, so a HEIC photo or a damaged file ends in a
generic server error. UploadedImage looks and behaves like gr.Image in the browser (upload, webcam, clipboard)
but passes the file path, or the `data:` URL, so the handler can check size and format and explain a rejection.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from gradio.events import Dependency

class UploadedImage(gr.Image):
    """gr.Image whose handler value is the uploaded file's path (or a `data:` URL), never a decoded image."""

    # Gradio picks the frontend of a template component by its base class, so the browser shows a gr.Image.
    is_template = True

    def preprocess(self, payload: Any) -> str | None:
        """Return the upload's file path, its `data:` URL, or None when the input is empty."""
        if payload is None:
            return None
        url = getattr(payload, "url", None)
        if isinstance(url, str) and url.startswith("data:"):
            return url
        path = getattr(payload, "path", None)
        return str(path) if path else None
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component