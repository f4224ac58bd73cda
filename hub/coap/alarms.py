"""Observable CoAP GET /alarms (RFC 7641): the alarm summary and the latest changes, as CBOR.

Scope: translate the alarms' state (hub/alarms.py) into a CoAP representation and notify
observers when it changes. The payload is a CBOR map (content format 60):
{"summary": {"active": {severity: n}, "unacked": n}, "active": [ids of the active alarms],
"changed": [the alarms (as GET /api/alarms shows them) changed since the notification
before]}. The changes of one evaluation pass make one notification, however many alarms
they touch.
"""

import asyncio

import aiocoap
from aiocoap.numbers import codes
from aiocoap.resource import ObservableResource
from smartpark.protocol import cbor

CT_CBOR = 60


class AlarmsResource(ObservableResource):
    rt = "smartpark.alarms"
    ct = str(CT_CBOR)

    def __init__(self, alarms):
        super().__init__()
        self.alarms = alarms
        self.changed = []
        self._batch = None  # the changes not yet notified (None: no notification due)
        alarms.listeners.append(self.on_change)

    def on_change(self, view):
        if self._batch is None:
            self._batch = []
            asyncio.get_running_loop().call_soon(self._notify)
        self._batch.append(view)

    def _notify(self):
        self.changed, self._batch = self._batch, None
        self.updated_state()

    def payload(self):
        active = sorted(i for i, a in self.alarms.alarms.items() if a["state"] == "active")
        return cbor.dumps({"summary": self.alarms.summary(), "active": active,
                           "changed": self.changed})

    async def render_get(self, request):
        m = aiocoap.Message(code=codes.CONTENT, payload=await self.alarms.read(self.payload))
        m.opt.content_format = CT_CBOR
        return m
