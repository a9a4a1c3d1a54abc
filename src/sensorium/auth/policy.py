"""Who may call which route: one table, keyed by (method, route template).

* ``read``  — any authenticated principal, guests too. The route limits what it answers to the
  principal's access scope (the query engine, latest values, alerts, the registry and graph,
  documents, the dashboard).
* ``write`` — users and admins (guests are read-only); scoped the same way (telemetry writes
  reject points of devices outside the scope, commands need a device in scope ...).
* ``self``  — any authenticated principal, about itself (``/me``, logout, its own password).
* ``admin`` — admins only: users, tokens, the audit log, registry writes, operations (dead
  letters, storage, stream, rules) and automations until they are scoped.

A route that is not in the table is ``admin`` for everyone else: a new route is closed to users
and guests until someone decides how it is scoped (a test lists the open ones). A route with a
``{device_id}`` in its path also needs that device in the principal's scope.
"""

from __future__ import annotations

from typing import Literal

Rule = Literal["read", "write", "self", "admin"]

R: Rule = "read"
W: Rule = "write"

POLICY: dict[tuple[str, str], Rule] = {
    # telemetry: writes (points of devices outside a user's scope are rejected) and reads
    ("POST", "/api/v2/write"): W,
    ("POST", "/write"): W,
    ("POST", "/api/v1/readings"): W,
    ("GET", "/api/v1/query"): R,
    ("POST", "/api/v1/query"): R,
    ("GET", "/api/v1/latest"): R,
    ("GET", "/api/v1/measurements"): R,
    ("GET", "/api/v1/series"): R,
    # alerts
    ("GET", "/api/v1/alerts"): R,
    ("GET", "/api/v1/alerts/stream"): R,
    ("GET", "/api/v1/alerts/{alert_id}"): R,
    ("POST", "/api/v1/alerts/{alert_id}/ack"): W,
    # devices (the path's device must be in scope)
    ("GET", "/api/v1/devices/{device_id}/commands"): R,
    ("POST", "/api/v1/devices/{device_id}/commands"): W,
    ("GET", "/api/v1/devices/{device_id}/sampling"): R,
    ("POST", "/api/v1/devices/{device_id}/sampling/publish"): W,
    # the registry and its graph, read through the access scope (writes: admins)
    ("GET", "/api/v1/registry/relations"): R,
    ("GET", "/api/v1/registry/{kind}"): R,
    ("GET", "/api/v1/registry/{kind}/{entity_id}"): R,
    ("GET", "/api/v1/graph/users/{user_id}"): R,
    ("GET", "/api/v1/graph/impact/{entity_id}"): R,
    ("GET", "/api/v1/graph/pagerank"): R,
    ("GET", "/api/v1/graph/communities"): R,
    ("GET", "/api/v1/graph/path"): R,
    # documents
    ("GET", "/api/v1/documents"): R,
    ("POST", "/api/v1/documents"): W,
    ("GET", "/api/v1/documents/{document_id}"): R,
    ("DELETE", "/api/v1/documents/{document_id}"): W,
    # the dashboard's data (scoped in its routes)
    ("GET", "/api/v1/dashboard/overview"): R,
    ("GET", "/api/v1/dashboard/devices"): R,
    ("GET", "/api/v1/dashboard/registry"): R,
    ("GET", "/api/v1/dashboard/devices/{device_id}/charts"): R,
    ("GET", "/api/v1/dashboard/events"): R,
    # forecasts of series whose devices are all the principal's (storing one needs write access)
    ("POST", "/api/v1/forecast"): R,
    ("GET", "/api/v1/forecast/compare"): R,
    # the agent and semantic search: answers, commands and results within the principal's scope
    # (commands and automations need write access, checked where they run)
    ("POST", "/api/v1/ask"): R,
    ("POST", "/api/v1/ask/feedback"): R,
    ("GET", "/api/v1/ask/interactions"): R,
    ("GET", "/api/v1/search"): R,
    ("GET", "/api/v1/search/similar"): R,
    # the principal itself, and the catalog (names and classifications, no data)
    ("GET", "/api/v1/me"): "self",
    ("POST", "/api/v1/logout"): "self",
    ("PUT", "/api/v1/me/password"): "self",
    ("GET", "/api/v1/catalog"): R,
}

#: requests that change something and are audited by the middleware (telemetry writes are not:
#: they are the data; reads that use POST are not either)
NOT_AUDITED = frozenset({
    "/api/v2/write", "/write", "/api/v1/readings", "/api/v1/query", "/api/v1/forecast",
    "/api/v1/rules/check", "/api/v1/automations/check", "/api/v1/login", "/api/v1/logout",
    "/api/v1/me/password", "/api/v1/ask",
})


def rule_for(method: str, template: str) -> Rule:
    if method == "HEAD":
        method = "GET"
    return POLICY.get((method, template), "admin")


__all__ = ["NOT_AUDITED", "POLICY", "Rule", "rule_for"]
