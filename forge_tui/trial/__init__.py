"""The trial window: per trial role, keep the new model or roll back, and why.

sc = scorecard_from_state(state, history_path)        # or scorecard(catalog, roles, audit, path)
render_markdown(sc); sc.model_dump_json(); sc.exit_code   # 0 keep, 1 roll back, 2 not enough data
"""

from .markdown import render_markdown
from .report import scorecard, scorecard_from_state
from .schema import SCHEMA_ID, RoleCard, Scorecard, Side
from .score import score

__all__ = [
    "SCHEMA_ID",
    "RoleCard",
    "Scorecard",
    "Side",
    "render_markdown",
    "score",
    "scorecard",
    "scorecard_from_state",
]
