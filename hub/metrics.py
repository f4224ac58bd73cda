"""Counters, gauges and a latency histogram, rendered as Prometheus text (format 0.0.4).

Everything runs on the event loop; no locks. Metric names start `smartpark_`.
"""

import math


class Counter:
    def __init__(self, name, help_text, labels=()):
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self.values = {}
        self.source = None  # optional dict label-value -> count kept by someone else

    def inc(self, *label_values, by=1):
        self.values[label_values] = self.values.get(label_values, 0) + by

    def get(self, *label_values):
        return self.values.get(label_values, 0)

    def render(self, out):
        if self.source is not None:
            self.values = {(k,): v for k, v in self.source.items()}
        out.append("# HELP %s %s" % (self.name, self.help))
        out.append("# TYPE %s counter" % self.name)
        if not self.labels and () not in self.values:
            out.append("%s 0" % self.name)
        for lv, v in sorted(self.values.items()):
            out.append("%s%s %s" % (self.name, _labels(self.labels, lv), _num(v)))


class Gauge:
    def __init__(self, name, help_text, fn):
        self.name = name
        self.help = help_text
        self.fn = fn

    def head(self, out):
        out.append("# HELP %s %s" % (self.name, self.help))
        out.append("# TYPE %s gauge" % self.name)

    def render(self, out):
        self.head(out)
        out.append("%s %s" % (self.name, _num(self.fn())))


class NodeGauge(Gauge):
    """One gauge per node: fn() -> {node id: number}; nodes without a value are left out."""

    def render(self, out):
        self.head(out)
        for node, v in sorted(self.fn().items()):
            out.append("%s%s %s" % (self.name, _labels(("node",), (node,)), _num(v)))


class Histogram:
    def __init__(self, name, help_text, buckets):
        self.name = name
        self.help = help_text
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, v, n=1):
        """n observations of value v (a batch of reports that shared one latency)."""
        self.count += n
        self.sum += v * n
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += n
                break

    def render(self, out):
        out.append("# HELP %s %s" % (self.name, self.help))
        out.append("# TYPE %s histogram" % self.name)
        acc = 0
        for b, c in zip(self.buckets, self.counts, strict=False):
            acc += c
            out.append('%s_bucket{le="%s"} %d' % (self.name, _num(b), acc))
        out.append('%s_bucket{le="+Inf"} %d' % (self.name, self.count))
        out.append("%s_sum %s" % (self.name, _num(self.sum)))
        out.append("%s_count %d" % (self.name, self.count))


def _num(v):
    if isinstance(v, float):
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        return repr(v)
    return str(v)


def _labels(names, values):
    if not names:
        return ""
    parts = []
    for n, v in zip(names, values, strict=False):
        v = str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append('%s="%s"' % (n, v))
    return "{" + ",".join(parts) + "}"


class Metrics:
    """The hub's metric set; gauges are added by the composition root."""

    def __init__(self):
        self.messages = Counter("smartpark_messages_total",
                                "CoAP reports received on POST /r, by front end", ("path",))
        self.readings = Counter("smartpark_readings_stored_total", "Readings newly stored")
        self.duplicate_readings = Counter("smartpark_readings_duplicate_total",
                                          "Readings dropped because already stored")
        self.duplicate_reports = Counter("smartpark_reports_duplicate_total",
                                         "Reports whose every reading was already stored")
        self.errors = Counter("smartpark_errors_total", "Rejected input, by kind", ("kind",))
        self.requests = Counter("smartpark_http_requests_total", "HTTP API requests", ("status",))
        self.events = Counter("smartpark_events_total", "Events published", ("type",))
        self.latency = Histogram(
            "smartpark_ingest_latency_seconds",
            "From report received to readings committed (ack ready)",
            (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0))
        self.gauges = []

    def gauge(self, name, help_text, fn):
        self.gauges.append(Gauge(name, help_text, fn))

    def node_gauge(self, name, help_text, fn):
        """A gauge labelled by node (config metrics.per_node: one series per node)."""
        self.gauges.append(NodeGauge(name, help_text, fn))

    def render(self):
        out = []
        for m in (self.messages, self.readings, self.duplicate_readings, self.duplicate_reports,
                  self.errors, self.requests, self.events, self.latency):
            m.render(out)
        for g in self.gauges:
            g.render(out)
        return "\n".join(out) + "\n"
