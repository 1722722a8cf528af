"""The REST request API (`/api/v1`): anyone holding an API token gets nodes, as Zuul does,
through an ordinary node request, for a lease of limited time.

    errors.py     `ApiError(status, field, message)`: every refusal, HTTP-free
    auth.py       bearer token -> its `ApiTokenConfig` (constant-time compare)
    validate.py   a create or renew body -> checked values (errors name the field)
    views.py      a lease (and its nodes) as the API's JSON
    waiters.py    long-poll: wake waiting GETs on a lease change (the lease cache)
    service.py    `LeaseService`: create, get (wait), list, renew, return; no HTTP
    keeper.py     `LeaseKeeper`: a launcher thread that owns leases (their lock), accepts
                  fulfilled requests for the client, holds the node locks, gives nodes back
    app.py        the werkzeug WSGI app: routes, bearer auth, JSON errors, metrics
    openapi.py    the OpenAPI 3 description served at `/api/v1/openapi.json`

The records are `model/lease.py` (`Lease`) stored by `zk/leases.py` (`LeaseStore`) at
`/nodepool/api-leases/<request id>`. Token secrets never reach ZooKeeper or the logs: a
lease and its node request name the token by its `name`.
"""
