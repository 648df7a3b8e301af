"""The HTTP service (DESIGN.md §8): the only package that imports FastAPI.

- app.py       create_app: wires everything below together
- settings.py  the LATENTGRAM_* settings
- state.py     the loaded run, or why there is none yet, and the watch for rebuilt tables
- workers.py   `serve --workers N`: N processes, each with its own socket on the port
- deps.py      what routes depend on: settings, the run, the API key
- handlers.py  errors → HTTP status codes; the body-size limit and request metrics
- routes/      one router per resource
- schemas.py   request and response bodies
- static/      the web page
"""

from service.api.app import create_app
from service.api.settings import Settings

__all__ = ["Settings", "create_app"]
