"""The web dashboard: server-rendered page shells (Jinja2) and vanilla JS modules that read the
REST API from the browser. No build step and no CDN: plotly.js is served from the plotly Python
package.

Mount it on the app::

    from api.app import create_app
    from api.dashboard import router

    app = create_app(settings, extra_routers=[router])
"""

from api.dashboard.router import router

__all__ = ["router"]
