"""The service's routes, one module per concern. Each module has a ``router`` (a FastAPI
``APIRouter``) and ``GUARDED``, the (method, path prefix) pairs whose requests take a worker and
a place in the queue (``cfcd.serve.gate``). A new route is one new module plus one line here."""

from . import health, images, page, search, session

MODULES = (search, session, images, health, page)
