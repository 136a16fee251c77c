"""Sidecar metrics: decisions, latency, cache, bundle, audit drops, the store.

Counting is a few integer adds under one lock (a decision's cost is microseconds: a library
counter per decision would double it); everything else is read at scrape time. prometheus_client
renders them, in the Prometheus text format or OpenMetrics, whichever the scraper asks for.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pdp.model import Decision, Effect, Reason

if TYPE_CHECKING:
    from pdp.sidecar.follower import FollowerState


# Seconds. Server-side Check work is tens of microseconds; the tail is what the buckets resolve.
BUCKETS = (0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Keyed by the enum members themselves: `.value` costs ~200 ns on Python 3.11.
        self._decisions: dict[tuple[Effect, Reason], int] = {}
        self._buckets = [0] * (len(BUCKETS) + 1)
        self._sum = 0.0
        self._bundle_loads = 0
        self._bundle_rejections = 0
        self._unknown_names: dict[str, int] = {}  # by kind: type, action, subject_type, attribute

    def observe(self, decision: Decision, seconds: float) -> None:
        key = (decision.effect, decision.reason)
        i = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            self._decisions[key] = self._decisions.get(key, 0) + 1
            self._buckets[i] += 1
            self._sum += seconds
            if decision.errors:  # rare: the usual decision pays one attribute test
                self._count_unknown(decision.errors)

    def observe_batch(self, decisions: list[Decision], seconds: float) -> None:
        """A batch's decisions under one lock; each is timed as its share of the batch."""
        if not decisions:
            return
        share = seconds / len(decisions)
        i = bisect.bisect_left(BUCKETS, share)
        with self._lock:
            counts = self._decisions
            for d in decisions:
                key = (d.effect, d.reason)
                counts[key] = counts.get(key, 0) + 1
                if d.errors:
                    self._count_unknown(d.errors)
            self._buckets[i] += len(decisions)
            self._sum += seconds

    def _count_unknown(self, errors: tuple[str, ...]) -> None:
        """Count the names a request used that the bundle does not know (under the lock)."""
        for error in errors:
            kind = _unknown_kind(error)
            if kind:
                self._unknown_names[kind] = self._unknown_names.get(kind, 0) + 1

    def bundle_loaded(self) -> None:
        with self._lock:
            self._bundle_loads += 1

    def bundle_rejected(self) -> None:
        with self._lock:
            self._bundle_rejections += 1

    def families(
        self,
        *,
        cache: Mapping[str, int],
        bundle_name: str,
        bundle_revision: str,
        bundle_loaded_at: float,
        tuple_revision: int,
        audit_dropped: int,
        audit_subscribers: int,
        tuples_quarantined: int = 0,
        store: FollowerState | None = None,
    ) -> Iterator[Metric]:
        """Every family, as of now: what the /metrics registry's collector yields at a scrape."""
        with self._lock:
            decisions = dict(self._decisions)
            buckets, total = list(self._buckets), self._sum
            loads, rejections = self._bundle_loads, self._bundle_rejections
            unknown_names = dict(self._unknown_names)
        counted = CounterMetricFamily(
            "pdp_decisions", "Check decisions by effect and reason.", labels=("effect", "reason")
        )
        for (effect, reason), n in sorted(
            ((e.value, r.value), n) for (e, r), n in decisions.items()
        ):
            counted.add_metric((effect, reason), n)
        yield counted
        cumulative, running = [], 0
        for le, n in zip((*map(str, BUCKETS), "+Inf"), buckets, strict=True):
            running += n
            cumulative.append((le, running))
        yield HistogramMetricFamily(
            "pdp_check_duration_seconds",
            "Server-side time to decide one check.",
            buckets=cumulative,
            sum_value=total,
        )
        unknown = CounterMetricFamily(
            "pdp_unknown_names",
            "Check requests naming what the bundle does not know (a typo, or a stale caller),"
            " by kind: type, action, subject_type, attribute. Each is a deny.",
            labels=("kind",),
        )
        for kind, n in sorted(unknown_names.items()):
            unknown.add_metric((kind,), n)
        yield unknown
        hits, misses = cache.get("hits", 0), cache.get("misses", 0)
        yield CounterMetricFamily("pdp_cache_hits", "Decision cache hits.", value=hits)
        yield CounterMetricFamily("pdp_cache_misses", "Decision cache misses.", value=misses)
        rate = hits / (hits + misses) if hits + misses else 0.0
        yield GaugeMetricFamily("pdp_cache_hit_ratio", "Cache hits over lookups since start.", rate)
        yield GaugeMetricFamily(
            "pdp_cache_entries", "Decisions in the cache.", cache.get("size", 0)
        )
        info = GaugeMetricFamily(
            "pdp_bundle_info",
            "The active bundle (value 1), or none (no series).",
            labels=("name", "revision"),
        )
        if bundle_revision:
            info.add_metric((bundle_name, bundle_revision), 1)
        yield info
        yield GaugeMetricFamily(
            "pdp_bundle_loaded_timestamp_seconds", "When it loaded.", bundle_loaded_at
        )
        yield CounterMetricFamily("pdp_bundle_loads", "Bundles loaded.", value=loads)
        yield CounterMetricFamily("pdp_bundle_rejections", "Bundles refused.", value=rejections)
        yield GaugeMetricFamily(
            "pdp_tuple_revision", "Current relation-tuple revision.", tuple_revision
        )
        yield GaugeMetricFamily(
            "pdp_tuples_quarantined",
            "Stored tuple rows a start could not apply (see BundleStatus).",
            tuples_quarantined,
        )
        yield CounterMetricFamily(
            "pdp_audit_dropped_events", "Audit events dropped.", value=audit_dropped
        )
        yield GaugeMetricFamily(
            "pdp_audit_subscribers", "Connected audit consumers.", audit_subscribers
        )
        if store is not None:
            yield from _store_families(store)


def _store_families(store: FollowerState) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "pdp_store_connected", "1 while the tuple store answers.", int(store.connected)
    )
    yield GaugeMetricFamily(
        "pdp_store_revision", "Newest revision seen in the tuple store.", store.head
    )
    yield GaugeMetricFamily(
        "pdp_store_lag_revisions",
        "Store revisions not yet applied here.",
        max(store.head - store.applied, 0),
    )
    yield GaugeMetricFamily(
        "pdp_store_seconds_since_contact",
        "Seconds since the tuple store last answered.",
        round(time.monotonic() - store.last_contact, 3),
    )


_UNKNOWN_KINDS = frozenset({"type", "action", "subject_type"})


def _unknown_kind(error: str) -> str:
    """The kind of name a decision error says is unknown or missing, or "" for any other error.
    The engine writes them as `unknown action "reed" for type document; ...` and
    `RULE: missing attribute `resource.tenant``."""
    if error.startswith("unknown "):
        kind = error[len("unknown ") :].partition(' "')[0].replace(" ", "_")
        return kind if kind in _UNKNOWN_KINDS else ""  # a label's values stay a fixed few
    if "missing attribute `" in error:
        return "attribute"
    return ""


class ScrapeCollector(Collector):
    """Registered in the /metrics registry: at each scrape, `families(**state())`."""

    def __init__(self, metrics: Metrics, state: Callable[[], Mapping[str, Any]]) -> None:
        self._metrics = metrics
        self._state = state

    def collect(self) -> Iterator[Metric]:
        return self._metrics.families(**self._state())
