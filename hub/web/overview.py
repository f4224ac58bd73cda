"""GET /api/overview: what the dashboard's overview shows, sized by the page, not the park.

The counts of nodes online and offline; at most `limit` node rows (offline nodes first,
then by id), each with its metadata and the latest value of up to MAX_VALUES of its
series (health series left out); the nodes that have a location, for the map. A filter
`q` keeps the nodes whose id, name or zone contains it (any case). Read from the
registry's live state and the park model in memory: no store query.
"""

import math

from ..registry import value_out

MAX_VALUES = 8
DEFAULT_LIMIT = 200
HEALTH = "health."


def _value(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def overview(registry, meta_of, q="", limit=DEFAULT_LIMIT):
    """The answer's dict. `meta_of(node)`: the node's metadata dict, or None when the hub
    has no park model."""
    nodes = registry.nodes
    online = sum(1 for n in nodes.values() if n.online)
    metas = {nid: meta_of(nid) for nid in nodes}
    needle = q.strip().lower()

    def hit(nid):
        m = metas[nid] or {}
        return any(needle in (v or "").lower() for v in (nid, m.get("name"), m.get("zone")))

    ids = [nid for nid in nodes if not needle or hit(nid)]
    ids.sort(key=lambda nid: (bool(nodes[nid].online), nid))
    rows = []
    for nid in ids[:limit]:
        n = nodes[nid]
        latest = []
        for sensor, sid in sorted(registry.node_series.get(nid, {}).items()):
            cur = registry.latest.get(sid)
            if sensor.startswith(HEALTH) or cur is None:
                continue
            latest.append({"sensor": sensor, "unit": registry.series[sid][2], "time": cur[0],
                           "value": _value(value_out(cur[1], cur[2]))})
            if len(latest) == MAX_VALUES:
                break
        rows.append({"id": nid, "online": bool(n.online), "last_seen": n.last_seen,
                     "meta": metas[nid], "latest": latest})
    places = [{"id": nid, "online": bool(nodes[nid].online), "name": m.get("name"),
               "location": m["location"]}
              for nid, m in sorted(metas.items()) if m and m.get("location")]
    return {"total": len(nodes), "online": online, "offline": len(nodes) - online,
            "matched": len(ids), "nodes": rows, "places": places}
