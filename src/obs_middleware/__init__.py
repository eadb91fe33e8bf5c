"""obs-middleware: unified telemetry for Python services that call AI providers.

HTTP request, database query, AI provider call and worker job spans nested in one trace, with
metrics and cost per user and model (measured overhead per workload: BENCHMARKS.md). Start with::

    import obs_middleware as obs

    obs.configure(service="images-api")
    app.add_middleware(obs.ObsMiddleware)
    obs.instrument_all()
"""

from ._core.config import (
    Config,
    HttpOptions,
    PipelineOptions,
    PricingOptions,
    RedactionOptions,
    SamplingOptions,
)
from ._core.context import extract, inject
from ._core.events import attach, detach
from ._core.job import Job, job
from ._core.span import Span, current_span, emit, span
from ._core.traced import traced
from ._pipeline import Exporter
from ._setup import configure, flush, mark_private, set_user, shutdown
from ._version import __version__ as __version__
from .integrations._ai_api import AICall, ai_cache, ai_call, current_ai_call
from .integrations._registry import Report, instrument_all, uninstrument_all
from .integrations.sqlalchemy import instrument_sqlalchemy, uninstrument_sqlalchemy
from .logs import LogHandler
from .middleware import ObsMiddleware, ObsWSGIMiddleware

__all__ = [
    "AICall",
    "Config",
    "Exporter",
    "HttpOptions",
    "Job",
    "LogHandler",
    "ObsMiddleware",
    "ObsWSGIMiddleware",
    "PipelineOptions",
    "PricingOptions",
    "RedactionOptions",
    "Report",
    "SamplingOptions",
    "Span",
    "ai_cache",
    "ai_call",
    "attach",
    "configure",
    "current_ai_call",
    "current_span",
    "detach",
    "emit",
    "extract",
    "flush",
    "inject",
    "instrument_all",
    "instrument_sqlalchemy",
    "job",
    "mark_private",
    "set_user",
    "shutdown",
    "span",
    "traced",
    "uninstrument_all",
    "uninstrument_sqlalchemy",
]
