"""The API's routes, one ``APIRouter`` per concern: ``generation`` (new cats, decoding,
interpolation), ``reconstruction`` (uploads: reconstruction, batch drift), ``health``
(liveness, readiness, model card, metrics) and ``page`` (the web page)."""
