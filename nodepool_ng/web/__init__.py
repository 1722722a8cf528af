"""The daemons' web app: werkzeug routing served by cheroot's WSGI server.

`server.WebApp` (lifecycle: start, stop, readiness), `app` (the WSGI application: routes,
negotiation, errors, caching, mounted applications), `status_paths` (upstream's status
tables), `page` (the HTML status page at `/`). doc/web.md describes every endpoint.
"""
