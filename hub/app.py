"""Composition root: the only place that wires the hub's parts together.

Start order: store (thread) -> live state loaded from it -> rollups replay ->
staged rollouts (their files) -> OSCORE keys and state -> ingest pipeline -> CoAP
site (POST /r, RD, /cfg, /latest, /fw) -> HTTP API -> zeroconf -> background tasks
(liveness, retention, rollup watermark, key directory, rollout checks).

Stop order ("stop accepting, flush, close"): new reports get 5.03, reports
in flight finish (their commits and acks), CoAP and HTTP close, background
tasks stop, the OSCORE replay windows are saved with their clean-stop marker,
the queued rollout files are written, zeroconf withdraws, the store commits what
is queued and closes the database (WAL checkpoint). A restart loads everything
back.
"""

import asyncio
import gc
import logging
import os
import sys
import time

from aiohttp import web
from smartpark.protocol.version import VERSION

from . import alarms as alarms_mod
from .api.http import Access, HttpApi, tls_context
from .clock import HubClock
from .coap.alarms import AlarmsResource
from .coap.server import CoapServer, build_site
from .codec import Decoder
from .discovery import Advertiser
from .events import EventBus
from .faults import DataLock, from_os_error, port_error
from .ingest import Pipeline
from .metrics import Metrics
from .park import Park
from .registry import Registry
from .rollouts import Rollouts
from .rollups import RollupFeeder
from .security import Security
from .store import SqliteStore
from .store.disk import DiskGuard

GC_GEN0 = 50000  # allocations between young-generation collections (default 700)

log = logging.getLogger("smartpark.hub")


def _rss_bytes():
    """Resident set size of this process (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class Hub:
    def __init__(self, config, advertise=None, out=None):
        self.config = config
        self.advertise = config.discovery_zeroconf if advertise is None else advertise
        self.out = out if out is not None else sys.stdout
        self.started = None
        self._tasks = []
        self.coap_port = None
        self.http_port = None
        self.rollups = None

    async def start(self):
        c = self.config
        loop = asyncio.get_running_loop()
        self.metrics = Metrics()
        self.clock = HubClock()
        self.events = EventBus()
        self.rollups = RollupFeeder()
        try:
            os.makedirs(c.data_dir, exist_ok=True)
        except OSError as e:
            raise from_os_error(e, "data directory %s" % c.data_dir) from None
        self.lock = DataLock(c.data_dir).acquire()
        if not os.access(c.data_dir, os.W_OK | os.X_OK):
            raise from_os_error(PermissionError(13, "not writable"), "data directory %s"
                                % c.data_dir)
        self.disk = DiskGuard(c.data_dir, c.store_reserve_mb, c.store_reserve_percent)
        self.disk.check(force=True)  # below the reserve already: said now, refused from the start
        self.store = SqliteStore(c.db_path, cache_mb=c.store_cache_mb, memory_mb=c.store_memory_mb,
                                 rollups=self.rollups, disk=self.disk,
                                 check_seconds=c.store_check_seconds)
        try:
            await self.store.start(loop)  # its failures come as StartError naming the file
        except OSError as e:
            self.store = None
            raise from_os_error(e, "database %s" % c.db_path) from None
        self.registry = Registry(self.store, self.events, factor=c.liveness_factor,
                                 default_interval=c.liveness_default_interval,
                                 firmware=c.nodes_firmware, wall=self.clock)
        self.registry.load(await self.store.load_state())
        if c.metrics_per_node:
            self.registry.add_node_gauges(self.metrics)
        await self.store.replay_rollups()
        # before CoAP serves: the first ack offers the versions the rollouts offered before
        self.rollouts = Rollouts(c.data_dir, self.registry, self.events).load()
        self.park = Park(c.data_dir, self.registry, c.park_file).load()
        self.alarms = alarms_mod.from_config(c, self.registry, self.events, self.park)
        self.security = Security(c.data_dir, mode=c.security_mode,
                                 window=c.security_replay_window).start()
        for line in self.security.warnings():
            log.warning("%s", line)
        self.decoder = Decoder()
        lane = self.decoder.enable_lane(self.store.newest) if c.coap_column_lane else None
        if lane is not None:  # None in a pure build
            self.metrics.gauge("smartpark_lane_reports",
                               "Reports stored as columns by the column lane", lambda: lane.n_lane)
            self.metrics.gauge("smartpark_lane_row_reports",
                               "SenML-CBOR reports the column lane left to the row path",
                               lambda: lane.n_rows)
        self.pipeline = Pipeline(self.store, self.decoder, self.registry, self.events,
                                 self.metrics, max_payload=c.coap_max_payload,
                                 max_future=c.coap_max_future, clock=self.clock,
                                 require_key=self.security.required)
        default_config = {"report_interval": c.liveness_default_interval}
        site, self.latest_site, self.rd = build_site(self.pipeline, self.registry, self.events,
                                                     default_config, self.security,
                                                     self.metrics, data_dir=c.data_dir)
        site.inner.add_resource(("alarms",), AlarmsResource(self.alarms))  # observable
        self.metrics.events.source = self.events.counts
        self.rd.restore()
        self.coap = CoapServer(site, c.coap_bind, c.coap_port, c.coap_multicast,
                               self.metrics)
        try:
            await self.coap.start()
        except OSError as e:
            raise port_error(e, "CoAP", c.coap_bind, c.coap_port) from None
        self.coap_port = self.coap.port
        self.fastpath = None
        if c.coap_fast_path:  # POST /r off the same socket, the rest stays aiocoap
            from .fastpath import FastPath

            self.fastpath = FastPath(self.pipeline, self.metrics,
                                     security=self.security).attach(self.coap)
        self.http = HttpApi(self.registry, self.store, self.events, self.metrics,
                            access=Access.from_config(c),
                            health=self.health, data_dir=c.data_dir, rollouts=self.rollouts)
        self.http.park, self.http.alarms = self.park, self.alarms  # hub/api/park.py
        self.alarms.gauges(self.metrics)
        self.alarms.hub_state = lambda: {   # "hub" alarm rules (hub/alarms.py)
            "disk": {"refusing": self.disk.refusing, "free_bytes": self.disk.free},
            "damaged_files": len(self._damage())}
        self.runner = web.AppRunner(self.http.app, access_log=None, shutdown_timeout=2.0)
        await self.runner.setup()
        http_site = web.TCPSite(self.runner, c.http_bind, c.http_port,
                                ssl_context=tls_context(c.http_tls_cert, c.http_tls_key))
        try:
            await http_site.start()
        except OSError as e:
            raise port_error(e, "HTTP", c.http_bind, c.http_port) from None
        self.http_port = c.http_port
        for addr in self.runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                self.http_port = addr[1]
                break
        self._gauges()
        self.advertiser = Advertiser(c.discovery_name, self.coap_port, self.http_port, VERSION)
        if self.advertise:
            await self.advertiser.start()
        self._tasks = [
            asyncio.create_task(self._liveness(), name="liveness"),
            asyncio.create_task(self._retention(), name="retention"),
        ]
        self._tasks.append(asyncio.create_task(self._rollup_clock(), name="rollups"))
        self._tasks.append(asyncio.create_task(self.security.watch(), name="keys"))
        self._tasks.append(asyncio.create_task(self._rollout_clock(), name="rollouts"))
        self._tasks.append(asyncio.create_task(self.alarms.run(c.alarms_check_interval),
                                               name="alarms"))
        self._tasks.append(asyncio.create_task(self._disk_watch(), name="disk"))
        # A report allocates a few short-lived containers; with the default threshold
        # (700) the collector would run every hundred reports or so and take a large share
        # of the event loop under load. Start-up state is long-lived: freeze it so
        # collections do not scan it, and collect the young generation less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(max(gc.get_threshold()[0], GC_GEN0), 20, 100)
        self.started = time.time()
        self.out.write("smartpark hub ready coap=%d http=%d data=%s decoder=%s fastpath=%s"
                       " lane=%s security=%s\n" % (
                           self.coap_port, self.http_port, c.data_dir, self.decoder.path,
                           "on" if self.fastpath else "off",
                           "on" if self.decoder.lane is not None else "off",
                           self.security.mode))
        self.out.flush()
        return self

    def _gauges(self):
        m = self.metrics
        m.gauge("smartpark_store_queue_depth", "Jobs waiting for the store thread",
                lambda: self.store.queue_depth)
        m.gauge("smartpark_ingest_inflight", "Reports being ingested (decoded, awaiting commit)",
                lambda: self.pipeline.inflight)
        for name, help_text, key in (
                ("commits", "Group commits since start", "commits"),
                ("commit_seconds", "Time the store thread spent in group commits",
                 "commit_seconds"),
                ("reports", "Reports committed since start", "committed_reports"),
                ("last_batch", "Reports in the last group commit", "last_batch"),
                ("moves", "Moves of journal readings into the database", "moves"),
                ("move_seconds", "Time the mover thread spent moving", "move_seconds"),
                ("move_steps", "Slices of moves into the database", "move_steps"),
                ("pending_readings", "Readings in the journal, not yet moved",
                 "pending_readings"),
                ("damaged_blocks", "Journal blocks found damaged, skipped and kept in the"
                 " table damaged_blocks", "damaged_blocks")):
            m.gauge("smartpark_store_" + name, help_text,
                    lambda key=key: self.store.stats()[key])
        if self.store.sqlite_memory() is not None:
            m.gauge("smartpark_sqlite_memory_bytes",
                    "Heap SQLite holds in the hub process (page caches of every connection)",
                    self.store.sqlite_memory)
        m.gauge("smartpark_disk_free_bytes", "Bytes free for the hub on the data directory's"
                " filesystem (last check)", lambda: self.disk.free or 0)
        m.gauge("smartpark_disk_reserve_bytes", "Free bytes below which new readings are"
                " refused (store.reserve_mb, store.reserve_percent)",
                lambda: self.disk.reserve or 0)
        m.gauge("smartpark_ingest_refusing_disk", "1 while new readings are refused (5.03)"
                " because free disk space is below the reserve", lambda: int(self.disk.refusing))
        m.gauge("smartpark_store_damaged_files", "Database or journal files found damaged at"
                " this start and set aside", lambda: len(self._damage()))
        m.gauge("smartpark_clock_steps", "Wall clock steps seen since start",
                lambda: self.clock.steps)
        m.gauge("smartpark_clock_step_seconds", "The last wall clock step (+ forward, - back)",
                lambda: self.clock.last_step)
        m.gauge("smartpark_process_rss_bytes", "Resident memory of the hub process", _rss_bytes)
        m.gauge("smartpark_nodes", "Known nodes", lambda: len(self.registry.nodes))
        m.gauge("smartpark_nodes_online", "Nodes online",
                lambda: sum(1 for n in self.registry.nodes.values() if n.online))
        m.gauge("smartpark_series", "Known series", lambda: len(self.registry.series))
        m.gauge("smartpark_sse_clients", "Server-Sent Events subscribers",
                lambda: self.events.subscribers)
        m.gauge("smartpark_events_dropped", "Events dropped for slow SSE clients",
                lambda: self.events.dropped)
        m.gauge("smartpark_coap_observers", "CoAP observers of /latest",
                lambda: self.latest_site.observers)
        m.gauge("smartpark_rollup_buckets_written", "Rollup buckets written since start",
                lambda: self.rollups.written)
        m.gauge("smartpark_rollup_late_total", "Readings too late for their rollup bucket",
                lambda: self.rollups.late)
        m.gauge("smartpark_rollouts_active", "Staged rollouts in their canary or rolling phase",
                lambda: self.rollouts.active())

    def _damage(self):
        d = getattr(self.store, "damage", None) or {}
        return d.get("recovered", [])

    def health(self):
        """/healthz: "ok", or "degraded" (HTTP 503) with the reasons: free disk space below
        the reserve (new readings refused), a damaged file set aside at this start."""
        reasons = []
        if self.disk.refusing:
            reasons.append("disk: %s bytes free on %s, below the reserve of %s bytes; new"
                           " readings are refused" % (self.disk.free, self.config.data_dir,
                                                       self.disk.reserve))
        for r in self._damage():
            reasons.append("damaged file %s was set aside as %s at start (see smartpark hub"
                           " doctor)" % (r["file"], r["moved_to"]))
        out = dict({"status": "degraded" if reasons else "ok", "version": VERSION,
                    "uptime": time.time() - (self.started or 0),
                    "decoder": self.decoder.path, "rollups": True,
                    "zeroconf": self.advertiser.active}, **self.security.health())
        out["disk"] = self.disk.health()
        out["clock"] = self.clock.health()
        if reasons:
            out["reasons"] = reasons
        return out

    async def _disk_watch(self):
        """Once a second: free space (and the journal's clean-up while refusing), and the
        clock (a wall clock step is noticed and logged here)."""
        while True:
            await asyncio.sleep(1.0)
            self.clock.steady()
            try:
                await self.store.housekeeping()
            except Exception:  # noqa: BLE001 - store closing
                return

    async def _liveness(self):
        interval = self.config.liveness_check_interval
        while True:
            await asyncio.sleep(interval)
            changed = self.registry.check_liveness()
            if changed:  # one transaction for all of them, not one fsync each
                try:
                    await self.registry._persist(*(self.registry.nodes[i] for i in changed))
                except Exception:  # noqa: BLE001 - store closing; state is rebuilt on start
                    return

    async def _retention(self):
        c = self.config
        while True:
            cutoff = self.clock.wall() - c.store_retention_days * 86400.0
            after = 0
            while after is not None:
                try:
                    _removed, after = await self.store.prune(cutoff, after)
                except Exception:  # noqa: BLE001 - store closing
                    return
                await asyncio.sleep(0)
            await asyncio.sleep(c.store_retention_interval)

    async def _rollup_clock(self):
        while True:
            await asyncio.sleep(10.0)
            try:
                # step-free: a wall clock step forward closes no bucket early
                await self.store.advance_rollups(self.clock.steady())
            except Exception:  # noqa: BLE001 - store closing
                return

    async def _rollout_clock(self):
        while True:
            await asyncio.sleep(self.config.rollouts_check_interval)
            try:
                await self.rollouts.tick()
            except Exception:  # noqa: BLE001 - logged; the next check runs anyway
                log.exception("rollout check failed")

    def _save_security(self):
        if getattr(self, "security", None) is None:
            return
        try:
            self.security.stop()
        except OSError:
            log.exception("could not save the OSCORE replay windows; nodes will need the "
                          "Echo exchange after the next start")

    async def _close_park(self):
        if getattr(self, "alarms", None) is not None:
            await self.alarms.close()
        if getattr(self, "park", None) is not None:
            await asyncio.to_thread(self.park.close)

    async def stop(self):
        """Stop in order; safe after a start that failed half way."""
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            pipeline.closing = True
            try:
                await asyncio.wait_for(pipeline.drain(), 10)
            except asyncio.TimeoutError:
                log.warning("reports still in flight at shutdown")
        if getattr(self, "fastpath", None) is not None:
            await self.fastpath.stop()
        if pipeline is not None:
            try:
                await pipeline.flush_seen()
            except Exception:  # noqa: BLE001 - store failed: logged, stop goes on
                log.exception("could not store the nodes' last-seen times")
        if getattr(self, "coap", None) is not None:
            await self.coap.stop()
        self._save_security()  # after both CoAP front ends: no window changes any more
        if getattr(self, "http", None) is not None:
            self.http.close_streams()
        if getattr(self, "runner", None) is not None:
            await self.runner.cleanup()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if getattr(self, "rollouts", None) is not None:
            await asyncio.to_thread(self.rollouts.close)
        await self._close_park()  # after the alarm task: the last changes written
        if getattr(self, "advertiser", None) is not None:
            await self.advertiser.stop()
        await self._close_store()

    async def _close_store(self):
        """The store (its last commits, the journal moved in), then the data directory's
        lock: the next hub starts on finished files."""
        if getattr(self, "store", None) is not None:
            await self.store.close()
        if getattr(self, "lock", None) is not None:
            self.lock.release()
            self.lock = None


async def serve(config, stop_event=None, out=None):
    """Run until stop_event is set (SIGINT/SIGTERM in the CLI)."""
    hub = Hub(config, out=out)
    await hub.start()
    try:
        await (stop_event or asyncio.Event()).wait()
    finally:
        await hub.stop()
    return 0
