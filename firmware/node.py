"""The node: wires config, board, drivers, sampler, outbox, clock, CoAP client and RD together.

One report cycle (every report_interval s, or one per wake-up in deep-sleep mode):
  1. health readings ("health.<key>", protocol/report.py HEALTH_KEYS) go into
     the outbox like any reading;
  2. find the hub (rd.py) and register / refresh the registration;
  3. until the clock is synced, a time-less POST /r asks the hub for its time;
  4. drain the outbox oldest first: packs of up to batch_max readings, CON POST
     /r (ct 112); a 2.xx acks the pack's records, its payload (report ack)
     syncs the clock and may announce a newer config version; 5.xx or silence
     keeps them for the next cycle; a 4.xx other than 4.13 means the hub will
     never take that pack, so its records are dropped and counted;
  5. a newer config version -> GET /cfg/<node>, validate, persist, apply.

Security: with an oscore.json (security.py) every request to the hub is
OSCORE-protected and only responses that verify count (coapc.py), so the
clock, configs and the hub's wishes come from the hub alone. A 4.01 keeps the
pack's readings (the hub refused the node, not the pack). Without the file the
node talks plain CoAP and says so once at boot.

Safe mode: when config.json is missing or invalid, the key at fault is
logged, and the node runs with no sensors (remotecfg.safe_config), still
reporting health and fetching its config from the hub every third cycle
until a valid one arrives (remotecfg.merge).
"""

import asyncio
import json
import os

import clock as clockmod
import drivers
import outbox as outboxmod
import pack
import rd
import sampler as samplermod
from board import Board
from coapc import Client, CoapReset, CoapTimeout, SecurityError
from compat import exists, log, mem_free, sleep_ms, ticks_diff, ticks_ms, unload
from smartpark.protocol import coap, report
from smartpark.protocol.errors import ConfigError, DecodeError
from smartpark.protocol.names import parse_hub
from smartpark.protocol.version import VERSION

FIRMWARE = VERSION   # main.py sets the running app slot's version (ota.py)
BOOT = None          # main.py: the boot pointer (boot.json) the node runs under, None: factory code
_PULSE_FILE = "pulse.json"
_KEY_FILE = "oscore.json"   # the node's OSCORE key (security.py)
_MAX_PAYLOAD = 1024
_LOW = [False]   # the battery is low (config battery.low_v): see low_battery()


def load_json(path, default):
    """A JSON file's value, or `default` when it is missing or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def save_json(doc, path):
    """Write a JSON file whole: a temporary file, then a rename (a power cut leaves the old
    or the new one). Also ota.py's, which so needs neither config.py nor remotecfg.py."""
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.rename(path + ".tmp", path)


def low_battery():
    """True while the battery is below config battery.low_v (until it is 0.1 V above it):
    reports are spaced battery.interval_factor times wider, and an update waits."""
    return _LOW[0]


class Node:
    def __init__(self):
        import config  # config.py and remotecfg.py: in the heap only while they work
        cfg, err = config.load()
        self.error = err
        # the file's dict even when invalid: a config from the hub is merged over it
        self.raw = cfg if isinstance(cfg, dict) else None
        sim = cfg.get("sim") if isinstance(cfg, dict) else None
        self.board = Board(sim if isinstance(sim, dict) else None)
        import remotecfg
        try:
            if err is not None:
                log("config error:", err, "-> safe mode (health only, waiting for a config from the hub)")
                cfg = remotecfg.safe_config(cfg, self.board.unique_id())
            else:
                remotecfg.remember_ident(cfg["node"])
        finally:
            unload("remotecfg")
            unload("config")
        self.cfg = cfg
        self.safe = err is not None
        mem = self.board.rtc_memory()
        try:
            self.rtc = json.loads(mem) if mem else {}
        except ValueError:
            self.rtc = {}
        if not isinstance(self.rtc, dict):
            self.rtc = {}
        self.rtc["boot"] = self.rtc.get("boot", 0) + 1
        _LOW[0] = bool(self.rtc.get("low"))   # known before this wake's battery reading
        self.clock = clockmod.Clock(self.board, self.rtc)
        self._save_rtc()
        self.outbox = outboxmod.Outbox(cfg["outbox_size"])
        ob = self.outbox
        if ob.recovered_bytes:
            log("outbox: dropped", ob.recovered_bytes - ob.resync_bytes, "bytes of torn tail,",
                ob.resync_bytes, "damaged bytes in the log, losing", ob.lost, "records")
        self.security = sec = None
        if exists(_KEY_FILE):
            import security
            self.security = sec = security.load(_KEY_FILE)
            if sec.why is not None:
                log("OSCORE key unusable:", sec.why, "- nothing is sent until it is replaced")
            else:
                log("OSCORE: requests protected, kid", sec.kid.hex())
        else:
            log("no %s: plain CoAP, for a hub with security.mode \"off\"" % _KEY_FILE)
        self.client = Client(cfg["coap"], sec)
        self.node = cfg["node"]
        self.hub = None
        self.hub_saved = False
        self.reg = None
        self._saved_reg = None
        self._restore_hub()
        self.cycles = 0
        self.stored = 0
        self.refused = 0
        self.diag = None   # diag.py's counts, made at the first: est, ref {code: n}, rej
        self.cfg_wanted = None
        self.cfg_failed = None
        self.fw_wanted = None
        self.fw_acked = False   # a trial version's report was acked: ota.step confirms it
        st = load_json("ota.json", {})
        self.ota = (st.get("state") or "idle", st.get("result"), st.get("reason"))
        global FIRMWARE
        img = load_json("image.json", {})   # a full image confirmed under this app code
        if isinstance(img, dict) and img.get("app") == FIRMWARE and img.get("version"):
            FIRMWARE = img["version"]   # otaimage.py: what the hub wanted runs
        self.ota_sent = None
        self._alive = ticks_ms()
        self._wdt = None
        self._ledger = open("ledger.log", "a") if cfg.get("ledger") else None
        if exists("crash.log"):
            import crashlog
            try:
                crashlog.report(self)   # the newest crash, when it is not the one reported before
            finally:
                unload("crashlog")
        self._build_sensors()

    # --- configuration ---
    def _build_sensors(self):
        pulses = load_json(_PULSE_FILE, {})
        sensors = []
        for i, s in enumerate(self.cfg["sensors"]):
            params = dict(s["params"])
            if s["driver"] in ("pulse", "pir"):
                # kept totals (pir: events not yet reported) plus the edges that woke the
                # sleeping board (configschema.wake_inputs: one RTC GPIO)
                params["start"] = pulses.get(s["name"], 0) + self.board.sleep_events(s["driver"], i)
            if s["driver"] == "scd4x" and self.cfg["deep_sleep"] != "off":
                params.setdefault("single_shot", True)   # a wake-up is shorter than periodic mode's 5 s
            try:
                drv = drivers.load(s["driver"])(self.board.bus(s, i), params)
            except Exception as e:  # a missing part must not stop the node
                log("sensor", s["name"], "not started:", repr(e))
                continue
            sensors.append((s, drv))
        self.sensors = sensors
        self.sampler = samplermod.Sampler(sensors, self.record, self.clock, self.cfg["report_interval"])
        self.reg = None

    def _save_rtc(self):
        try:
            self.board.rtc_memory_write(json.dumps(self.rtc).encode())
        except OSError:
            pass

    def _wake_pin(self):
        """(GPIO, level) of the input whose edges wake the sleeping board, or None."""
        for s, drv in self.sensors:
            if s["driver"] in ("pulse", "pir") and "in" in s["pins"]:
                return s["pins"]["in"], 1 if s["driver"] == "pir" else 0
        return None

    def _save_pulses(self):
        totals = {}
        for s, drv in self.sensors:
            if s["driver"] in ("pulse", "pir"):
                totals[s["name"]] = drv.total()
        if totals:
            save_json(totals, _PULSE_FILE)

    # --- recording ---
    def record(self, recs):
        seq = self.outbox.append(recs)
        if self._ledger is not None:
            lines = []
            for r in recs:
                lines.append("%d %d %d %d %s\n" % (seq, r[0], r[1], r[2], r[5]))
                seq += 1
            self._ledger.write("".join(lines))
            self._ledger.flush()

    def check_battery(self):
        """The last battery reading (V or None); sets low_battery(), with 0.1 V of hysteresis."""
        v = None
        for s, drv in self.sensors:
            if drv.FIELDS[0][0] == "vbat":
                v = drv.value(0)
        low_v = self.cfg["battery"]["low_v"]
        was = _LOW[0]
        if not low_v:
            low = False
        elif v is None:
            low = was
        else:
            low = v < low_v or (was and v < low_v + 0.1)
        if low != was:
            log("battery", v, "V:", "low - reports spaced wider, no update" if low else "ok again")
            self.rtc["low"] = low
            self._save_rtc()
        _LOW[0] = low
        return v

    def interval_ms(self):
        """The report interval, stretched while the battery is low."""
        f = self.cfg["battery"]["interval_factor"] if _LOW[0] else 1
        return int(self.cfg["report_interval"] * f * 1000)

    def health(self):
        vbat = self.check_battery()
        rc = self.board.reset_cause()
        new_rc = rc != self.rtc.get("rst")   # the reset cause is sent when it changes
        values = {
            "uptime": (self.clock.uptime_s(), "s"),
            "heap_free": (mem_free(True), "B"),
            "reset": (rc if new_rc else None, ""),
            "rssi": (self.board.rssi(), "dBm"),
            "vbat": (vbat, "V"),
            "outbox": (self.outbox.depth(), ""),
            "dropped": (self.outbox.dropped, ""),
            "retx": (self.client.retx, ""),
        }
        flags, run, t = self.clock.stamp()
        recs = []
        for key in report.HEALTH_KEYS:
            v, unit = values.get(key, (None, ""))
            if v is not None:
                recs.append((flags, run, t, "v", v, "health." + key, unit))
        if self.cfg["battery"]["low_v"]:
            recs.append((flags, run, t, "vb", _LOW[0], "health.low_battery", ""))
        if new_rc:
            self.rtc["rst"] = rc
        if self.ota != self.ota_sent or self.cycles % (16 * self.cfg["health_every"]) == 0:
            recs += self._ota_health(flags, run, t)
        # field diagnostics (diag.py), in the heap only here; the first report after a
        # power-on (registration and sync: the heap's peak) loads it only when something is wrong
        if self.rtc.get("dg") or self.safe or self.sampler.failures or \
                len(self.sensors) < len(self.cfg["sensors"]):
            import diag
            try:
                recs += diag.readings(self, flags, run, t)
            finally:
                unload("diag")
        else:
            self.rtc["dg"] = (1, 0)   # the second report sends them all
        return recs

    # --- over-the-air update (ota.py, loaded only while it works) ---
    def _ota_health(self, flags, run, t):
        self.ota_sent = o = self.ota
        recs = [(flags, run, t, "vs", FIRMWARE, "health.fw", ""),
                (flags, run, t, "vs", o[0], "health.ota_state", "")]
        if o[1]:
            recs.append((flags, run, t, "vs", o[1], "health.ota_result", ""))
            recs.append((flags, run, t, "vs", (o[2] or "")[:80], "health.ota_reason", ""))
        return recs

    async def update(self):
        """ota.step: record main.py's fall-back, confirm a trial version once the hub acked a
        report, or download a wake's share of the version the hub wants. A changed (state,
        result, reason) is recorded as health readings at once."""
        left = None
        while True:
            import ota
            try:
                got = await ota.step(self, left)
            finally:
                unload("ota")
                unload("otaimage")
            if not isinstance(got, int):
                break
            left = got   # the manifest is whole: its half runs with ota.py out of the heap
            import otaman
            try:
                got = otaman.check(self.cfg["ota"])
            finally:
                unload("otaman")
                unload("remotecfg")
                unload("config")
            if got is not None or left <= 0:
                break
        if got is not None and got != self.ota:
            self.ota = got
            flags, run, t = self.clock.stamp()
            self.record(self._ota_health(flags, run, t))

    # --- talking to the hub ---
    def _restore_hub(self):
        """Keep the hub and its registration across a wake-up: from RTC memory, else (a
        deep-sleep node after a power cut) rd.json, whose registration time is of another
        power cycle and is refreshed at once. Not after the hub stopped answering ("lost")."""
        st = self.rtc.get("rd")
        fresh = True
        if not st and self.cfg["deep_sleep"] != "off":
            st = rd.state_file()
            fresh = False
        if not st or self.rtc.get("lost"):
            return
        hp = (st[0], st[1])
        conf = parse_hub(self.cfg["hub"])
        if conf is not None and conf != hp:
            return
        self._saved_reg = (st, fresh)
        self.client.connect(hp[0], hp[1])
        self.hub = hp
        self.hub_saved = True

    async def find_hub(self):
        cfg = self.cfg
        hp = parse_hub(cfg["hub"])
        how = "config"
        if hp is None:
            import discover
            self.rtc["disc"] = self.rtc.get("disc", 0) + 1
            try:
                hp, how = await discover.find(cfg["hub_port"], cfg["hub_mdns"])
            finally:
                for name in discover.MODULES:
                    unload(name)
        if hp is None:
            return False
        if self.hub != hp:
            log("hub at %s:%d" % hp, "(%s)" % how)
            self.client.connect(hp[0], hp[1])
            self.hub = hp
            self.hub_saved = False
            self.reg = None
        return True

    async def _register(self):
        """Register with the hub's RD, or refresh the registration when due."""
        reg = self.reg
        if reg is None:
            st, fresh = self._saved_reg or (None, True)
            self._saved_reg = None
            reg = self.reg = rd.Registration(self.client, self.node, self.cfg["lifetime"],
                                             rd.links_for(self.cfg["sensors"]), FIRMWARE,
                                             self.board.rtc_ms, self.hub, st)
            if not fresh:
                reg._at = None   # another power cycle's RTC time: refresh at once
        sent = reg.count + reg.updates
        try:
            if await reg.ensure():
                self._save_hub()
        except (CoapTimeout, CoapReset):
            reg.forget()
            raise
        finally:
            self._note_reg(reg, reg.count + reg.updates - sent)

    def _note_reg(self, reg, sent):
        """Keep the registration in RTC memory and rd.json when it changed."""
        if sent:
            self.rtc["rdq"] = self.rtc.get("rdq", 0) + sent
        st = None if reg.location is None else [reg.hub[0], reg.hub[1], reg.location, reg._at,
                                                reg.lifetime, reg.key]
        if st != self.rtc.get("rd"):
            self.rtc["rd"] = st
            rd.state_file(st)
        if sent:
            self._save_rtc()

    def _save_hub(self):
        """Remember the hub in flash once it answered a registration (with OSCORE: one that
        verified), never merely because something answered the discovery."""
        if not self.hub_saved and self.hub is not None:
            if self.hub != rd.remembered():
                rd.remember(self.hub[0], self.hub[1])
            self.hub_saved = True
        self.rtc.pop("lost", None)

    def _ack(self, resp):
        """Use the report ack carried by a 2.xx (hub time, config version, firmware)."""
        if not resp.payload:
            return
        try:
            a = report.decode_ack(resp.payload)
        except (DecodeError, ValueError):
            return
        self.clock.sync(clockmod.ack_time_ms(resp.payload, a["time"]), self.client.last_rtt_ms or 0)
        if self.clock.syncs == 1 or self.clock.syncs % 16 == 0:
            self._save_rtc()
        cv = a["config_version"]
        if cv > self.cfg["config_version"] and cv != self.cfg_failed:
            self.cfg_wanted = cv
        self.fw_acked = True
        fw = a["firmware"]
        self.fw_wanted = fw if fw and fw != FIRMWARE else None

    async def sync_time(self):
        extra = [("health.uptime", "s", "v", self.clock.uptime_s())]
        r = await self.client.request(coap.POST, "/r", pack.build(self.node, [], extra),
                                      pack.CT_SENML_CBOR)
        if r.code >> 5 == 2:
            self._ack(r)
        return self.clock.synced()

    def _next_pack(self, limit):
        """(items, last seq, estimated) of the next sendable records; drops never-resolvable
        ones. A pack's records all have measured times, or all estimated ones (taken before
        the clock's first sync, flag 0): those carry the marker (pack.build `est`)."""
        while True:
            recs = self.outbox.peek(limit)
            items = []  # type: list
            last = None
            first_ms = None
            drop = None
            est = None
            for seq, flags, run, t, kind, value, name, unit in recs:
                ms = self.clock.resolve(flags, run, t)
                if ms == -1:
                    if items:
                        break
                    drop = seq
                    continue
                if ms is None:
                    break
                if drop is not None:
                    break
                if est is None:
                    est = not flags & 1
                elif est != (not flags & 1):
                    break
                if first_ms is None:
                    first_ms = ms
                elif not pack.fits(first_ms, ms):
                    break
                items.append((ms, name, unit, kind, value))
                last = seq
            if drop is not None and not items:
                log("outbox: dropping readings of a run that never got the time, up to", drop)
                self.outbox.drop(drop)
                continue
            return items, last, bool(est)

    async def drain(self, max_packs=50):
        """Send packs until the outbox is empty (True) or the hub stops taking them (False)."""
        limit = self.cfg["batch_max"]
        for _ in range(max_packs):
            self._alive = ticks_ms()
            items, last, est = self._next_pack(limit)
            if not items:
                return True
            payload = pack.build(self.node, items, est=est)
            while len(payload) > _MAX_PAYLOAD and len(items) > 1:
                items = items[:len(items) // 2]
                payload = pack.build(self.node, items, est=est)
            n = len(items)
            # the pack holds them now: neither the items nor the bytearray stay in the heap
            # while the request is out (bytes() of bytes is no copy in coap.Message)
            del items
            payload = bytes(payload)
            last = self.outbox.head + n - 1   # items always start at the head
            r = await self.client.request(coap.POST, "/r", payload, pack.CT_SENML_CBOR)
            cls = r.code >> 5
            if cls == 2:
                self.outbox.ack(last)
                self.stored += n
                if est:
                    d = self.diag = self.diag or {}
                    d["est"] = d.get("est", 0) + n
                self._ack(r)
            elif r.code == coap.REQUEST_ENTITY_TOO_LARGE and limit > 1:
                limit = max(1, n // 2)
            elif r.code == coap.UNAUTHORIZED:
                # not this pack's fault: the hub does not accept this node's credentials
                # (a plain node at an OSCORE hub, a key the hub revoked); keep the readings
                log("hub answered 4.01 Unauthorized", r.payload[:60], "- keeping readings")
                return False
            elif cls == 4:
                code = coap.code_str(r.code)
                log("hub refused a pack:", code, r.payload[:60], "- dropping", n)
                self.refused += n
                d = self.diag = self.diag or {}
                ref = d.setdefault("ref", {})
                ref[code] = ref.get(code, 0) + n
                self.outbox.drop(last)
            else:
                log("hub answered", coap.code_str(r.code), "- keeping readings")
                return False
        return self.outbox.depth() == 0

    async def fetch_config(self):
        want = self.cfg_wanted
        resp, body = await self.client.get("/cfg/" + self.node, accept=coap.CBOR)
        if resp.code != coap.CONTENT:
            log("cfg: GET got", coap.code_str(resp.code))
            return False
        import remotecfg
        try:
            got = remotecfg.merge(body, self.raw, self.cfg, self.safe, want)
        except (DecodeError, ConfigError) as e:
            log("cfg from hub rejected:", e)
            unload("remotecfg")
            unload("config")
            d = self.diag = self.diag or {}
            d["rej"] = (want or 0, getattr(e, "key", "(cbor)"), getattr(e, "why", str(e)))
            self.cfg_failed = want
            self.cfg_wanted = None
            return False
        if got is None:
            unload("remotecfg")
            unload("config")
            log("cfg: the hub has no config for this node yet; staying in safe mode")
            return False
        merged, cfg = got
        remotecfg.config.save(merged)
        unload("remotecfg")
        unload("config")
        log("config version", cfg["config_version"], "applied")
        self.apply(merged, cfg)
        return True

    def apply(self, raw, cfg):
        """Apply a new valid config without a reboot."""
        self.sampler.stop()
        self.raw = raw
        self.cfg = cfg
        self.safe = False
        self.error = None
        self.cfg_wanted = None
        if self.diag:
            self.diag.pop("rej", None)
        self.outbox.max = cfg["outbox_size"]
        c = self.client
        p = cfg["coap"]
        c.ack_timeout_ms = int(p["ack_timeout"] * 1000)
        c.factor = float(p["ack_random_factor"])
        c.max_retransmit = int(p["max_retransmit"])
        if parse_hub(cfg["hub"]) != self.hub and cfg["hub"] != "auto":
            self.hub = None
        self._build_sensors()
        if cfg["deep_sleep"] == "off":
            self.sampler.start()

    # --- the loop ---
    async def cycle(self):
        self.cycles += 1
        if self.cycles % self.cfg["health_every"] == 0 or self.safe:
            self.record(self.health())   # checks the battery too
        else:
            self.check_battery()
        self._save_pulses()
        if not self.board.network_up(self.cfg["wifi"]):
            log("network not up")
            return False
        if self.cfg["ntp"] and not self.clock.synced():
            ntp = self.cfg["ntp"]
            ms = self.board.ntp_ms(ntp if isinstance(ntp, str) else None)
            if ms:
                self.clock.sync(ms)
                self._save_rtc()
        try:
            if self.hub is None and not await self.find_hub():
                log("no hub found")
                return False
            await self._register()
            if not self.clock.synced():
                await self.sync_time()
            ok = await self.drain()
            if self.cfg_wanted is not None or (self.safe and self.cycles % 3 == 1):
                await self.fetch_config()
            if (self.fw_wanted is not None and not self.safe) or self.ota[0] == "updating" or (
                    BOOT is not None and (BOOT.get("reason") or BOOT.get("trial") and self.fw_acked)) or (
                    self.fw_acked and self.ota[0] in ("downloading", "downloaded")):   # withdrawn?
                await self.update()
            return ok
        except CoapTimeout as e:
            log("hub silent:", e)
            if self.cfg["hub"] == "auto":
                self.hub = None
                self.rtc["lost"] = 1   # the next wake-up looks for the hub again
            return False
        except CoapReset:
            log("hub reset the exchange")
            return False
        except SecurityError as e:
            log("OSCORE:", e)
            return False
        except OSError as e:
            log("network error:", e)
            self.hub = None
            return False

    def write_status(self):
        """status.json for tests and tools (only with config "ledger": flash wear on a board)."""
        if self._ledger is None:
            return
        st = {"cycles": self.cycles, "stored": self.stored, "depth": self.outbox.depth(),
              "dropped": self.outbox.dropped, "refused": self.refused, "retx": self.client.retx,
              "synced": self.clock.synced(), "registered": bool(self.reg and self.reg.location),
              "registrations": self.reg.count if self.reg else 0, "safe": self.safe,
              "error_key": self.error.key if self.error else None,
              "config_version": self.cfg["config_version"], "samples": self.sampler.samples,
              "failures": self.sampler.failures, "boot": self.rtc.get("boot"),
              "reset": self.board.reset_cause(), "syncs": self.clock.syncs,
              "wdt_feeds": self._wdt.fed if self._wdt is not None and hasattr(self._wdt, "fed") else None,
              "oscore": self.security is not None, "strays": self.client.strays,
              "echoes": self.client.echoes, "rd_requests": self.rtc.get("rdq", 0),
              "discoveries": self.rtc.get("disc", 0)}
        save_json(st, "status.json")

    async def run_drain(self, max_cycles=40):
        """Only send: no sampling, no health, until the outbox is empty (tests' final drain)."""
        for _ in range(max_cycles):
            self.cycles += 1
            try:
                if self.hub is None and not await self.find_hub():
                    await sleep_ms(500)
                    continue
                if not self.clock.synced():
                    await self.sync_time()
                if await self.drain(1000) and self.outbox.depth() == 0:
                    break
            except (CoapTimeout, CoapReset, OSError) as e:
                log("drain:", repr(e))
                await sleep_ms(500)
        self.write_status()
        self.outbox.close()
        return self.outbox.depth() == 0

    async def _watchdog(self, ms):
        wdt = self._wdt = self.board.watchdog(ms)
        while True:
            # fed while the main loop moves on, or while a CoAP exchange is still
            # retransmitting (RFC 7252 allows up to 93 s for one); a hung loop or
            # a blocked interpreter stops the feeding and the WDT resets the board
            now = ticks_ms()
            if ticks_diff(now, self._alive) < ms // 2 or ticks_diff(now, self.client.last_io) < ms // 2:
                wdt.feed()
            await sleep_ms(ms // 4)

    async def run(self, cycles=None):
        cfg = self.cfg
        for coro in self.board.background():
            asyncio.create_task(coro)
        if cfg["watchdog_ms"]:
            asyncio.create_task(self._watchdog(cfg["watchdog_ms"]))
        self.board.network_up(cfg["wifi"])   # start joining; cycle() checks again
        sleeping = cfg["deep_sleep"] == "between_reports"
        if sleeping and self.board.pin_woke:
            left = self.rtc.get("due", 0) - self.board.rtc_ms()
            if 1000 < left < self.interval_ms() + 1000:
                # woken by a pulse or PIR edge before the report is due: count it, sleep on
                self._save_pulses()
                self.outbox.close()
                self.board.deepsleep(left, self._wake_pin())
        if sleeping:
            await self.sampler.sample_all()
        else:
            self.sampler.start()
        n = 0
        while cycles is None or n < cycles:
            n += 1
            self._alive = ticks_ms()
            t0 = ticks_ms()
            ok = await self.cycle()
            self.write_status()
            if self.cfg["deep_sleep"] == "between_reports":
                for _s, drv in self.sensors:
                    if hasattr(drv, "sleep"):
                        drv.sleep()   # a part left awake (a failed reading) sleeps with the node
                self._save_rtc()
                self._save_pulses()
                self.outbox.close()
                rest = max(self.interval_ms() - ticks_diff(ticks_ms(), t0), 1000)
                self.rtc["due"] = self.board.rtc_ms() + rest
                self._save_rtc()
                self.board.deepsleep(rest, self._wake_pin())
            wait = self.interval_ms() - ticks_diff(ticks_ms(), t0)
            if not ok and wait > 5000:
                wait = 5000 if self.outbox.depth() else wait
            while wait > 0:
                step = min(wait, 1000)
                self._alive = ticks_ms()
                await sleep_ms(step)
                wait -= step
        self.sampler.stop()
        self.outbox.close()
