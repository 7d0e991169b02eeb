"""The web dashboard: server-rendered page shells (Jinja2) and vanilla JS modules that read the
REST API from the browser. No CDN: the training curves are drawn with uPlot, fetched from the npm
registry at build time (`make setup` runs scripts/fetch_vendor.py: pinned version, sha512 checked)
into static/vendor/; the scatter and parallel-coordinates views use plotly.js from the plotly
Python package, loaded after the curves are drawn.

Mount it on the app::

    from api.app import create_app
    from api.dashboard import router

    app = create_app(settings, extra_routers=[router])
"""

from api.dashboard.router import router

__all__ = ["router"]
