"""Observable CoAP GET /alarms (RFC 7641): the alarm summary and the last change, as CBOR.

Scope: translate the alarms' state (hub/alarms.py) into a CoAP representation and notify
observers on every change. The payload is a CBOR map (content format 60):
{"summary": {"active": {severity: n}, "unacked": n}, "last": the alarm that changed last
(as GET /api/alarms shows it) or null, "active": [ids of the active alarms]}.
"""

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
        self.last = None
        alarms.listeners.append(self.on_change)

    def on_change(self, view):
        self.last = view
        self.updated_state()

    def payload(self):
        active = sorted(i for i, a in self.alarms.alarms.items() if a["state"] == "active")
        return cbor.dumps({"summary": self.alarms.summary(), "last": self.last,
                           "active": active})

    async def render_get(self, request):
        m = aiocoap.Message(code=codes.CONTENT, payload=self.payload())
        m.opt.content_format = CT_CBOR
        return m
