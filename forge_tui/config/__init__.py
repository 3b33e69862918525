"""The catalog: what the operator declares (hosts, backends, families, models, roles)."""

from .loader import ConfigError, load_catalog, parse_catalog
from .models import *  # noqa: F403
from .models import __all__ as _models_all

__all__ = ["ConfigError", "load_catalog", "parse_catalog", *_models_all]
