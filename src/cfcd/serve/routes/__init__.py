"""The service's routes, one module per concern. Each module has a ``router`` (a FastAPI
``APIRouter``) and ``GUARDED``, the (method, path pattern) pairs whose requests take a worker and
a place in the queue (``cfcd.serve.gate``). A new route is one new module plus one line here."""

from . import collection, duplicates, health, images, ingest, page, search, session, similar

# Order matters where paths overlap: /images (list) and /images/{id}/similar before /images/{id}.
MODULES = (search, session, collection, similar, ingest, images, duplicates, health, page)
