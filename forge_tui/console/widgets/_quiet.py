"""Content updates that cost the least: none when unchanged, no layout pass when the height holds.

``Static.update`` asks for a layout pass of the whole screen by default; a pane whose text
changes every poll (figures under load) but keeps its line count only needs a repaint, and one
whose text did not change needs nothing.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

__all__ = ["same_text", "set_subtitle", "text_height"]


def same_text(a: Text | None, b: Text | None) -> bool:
    """Equal as drawn: text, base style, spans and justification (Text's own == ignores styles)."""
    if a is None or b is None:
        return a is b
    return a.plain == b.plain and a.style == b.style and a.spans == b.spans and a.justify == b.justify


def text_height(widget: Widget, text: Text) -> int | None:
    """Lines ``text`` wraps to in ``widget``'s content width; None before the first layout."""
    width = widget.content_size.width
    if width <= 0:
        return None
    return len(text.wrap(widget.app.console, width))


def set_subtitle(widget: Widget, subtitle: str) -> None:
    """Set a border subtitle; Textual repaints the widget on every assignment, even of the same text."""
    if widget.border_subtitle != subtitle:
        widget.border_subtitle = subtitle
