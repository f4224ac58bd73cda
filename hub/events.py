"""In-process event bus: readings, node online/offline, registration changes.

Subscribers are either bounded asyncio queues (one per SSE client; a client
that cannot keep up loses events, counted, instead of stalling ingest) or
plain callbacks run on the event loop (CoAP Observe of /latest).
"""

import asyncio
import time


class EventBus:
    def __init__(self, queue_size=1000):
        self.queue_size = queue_size
        self._queues = set()
        self._listeners = []
        self.dropped = 0
        self.counts = {}  # type -> events published

    def active(self):
        """True when someone listens; lets ingest skip building events nobody reads."""
        return bool(self._queues or self._listeners)

    def publish(self, kind, data):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if not self._queues and not self._listeners:
            return
        event = {"type": kind, "time": time.time(), "data": data}
        for fn in list(self._listeners):
            try:
                fn(event)
            except Exception:  # noqa: BLE001 - a bad listener must not break ingest
                import traceback

                traceback.print_exc()
        for q in list(self._queues):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                self.dropped += 1

    def add_listener(self, fn):
        if fn not in self._listeners:
            self._listeners.append(fn)

    def remove_listener(self, fn):
        if fn in self._listeners:
            self._listeners.remove(fn)

    def subscribe(self):
        q = asyncio.Queue(self.queue_size)
        self._queues.add(q)
        return q

    def unsubscribe(self, q):
        self._queues.discard(q)

    @property
    def subscribers(self):
        return len(self._queues)
