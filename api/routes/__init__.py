"""The API's route modules: one small router per resource.

Each router carries its full prefix (``API_PREFIX`` + resource) itself rather than getting it
from ``include_router(prefix=...)``, so that the matched route's template is the full path
(what the metrics middleware labels requests with).
"""

API_PREFIX = "/api/v1"
