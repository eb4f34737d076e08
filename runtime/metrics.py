"""The node's Prometheus metrics: one registry per node, read at scrape time.

Why a collector rather than metric objects updated everywhere: the layers below the runtime
(actors, persistence) count what they do as plain data (``engine.counters``, ``engine.events``,
a queue's ``waits``, the journal's ``commit_stats``), so they stay free of any metrics library
and the hot path pays an integer increment, not a labelled-metric lookup. Only the HTTP
request metrics are ``prometheus_client`` objects, updated by the API layer. Labels are bounded:
route templates, methods, statuses, namespaces, queue names, event types — never a workflow id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from persistence.buckets import LATENCY_SECONDS, Buckets

REQUEST_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _histogram(name: str, doc: str, labels: list[str], series: Iterator[tuple[list[str], Buckets]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, buckets in series:
        family.add_metric(values, buckets.cumulative(), buckets.total)
    return family


class NodeCollector(Collector):
    """Everything but the request metrics, read from the node's plain counters at scrape time."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        engine = self.node.engine
        events = engine.events
        yield from self._workflows(engine, events)
        yield from self._queues(engine)
        yield from self._journal(self.node.journal)
        yield from self._actors(engine)
        yield from self._shards(engine, self.node.shard_manager)

    @staticmethod
    def _workflows(engine: Any, events: Any) -> Iterator[Metric]:
        starts = CounterMetricFamily("dw_workflow_starts", "Workflow runs started on this node.")
        starts.add_metric([], events["WorkflowStarted"])
        yield starts
        closed = CounterMetricFamily("dw_workflow_closed", "Workflow runs closed on this node, by outcome.", labels=["outcome"])
        for outcome, buckets in sorted(engine.run_seconds.items()):
            closed.add_metric([outcome], buckets.count)
        yield closed
        yield _histogram("dw_workflow_run_seconds", "Start-to-close time of the runs closed on this node.", ["outcome"],
                         (([o], b) for o, b in sorted(engine.run_seconds.items())))
        for name, kind, doc in (("dw_activity_attempts", "ActivityStarted", "Activity attempts started."),
                                ("dw_activity_retries", "ActivityRetryScheduled", "Activity retries scheduled."),
                                ("dw_activity_timeouts", "ActivityTimedOut", "Activities that timed out.")):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], events[kind])
            yield family
        history = CounterMetricFamily("dw_history_events", "History events committed on this node, by type.", labels=["event_type"])
        for kind, n in sorted(events.items()):
            history.add_metric([kind], n)
        yield history

    @staticmethod
    def _queues(engine: Any) -> Iterator[Metric]:
        labels = ["kind", "namespace", "task_queue"]
        backlog = GaugeMetricFamily("dw_task_queue_backlog", "Tasks ready and waiting for a worker.", labels=labels)
        oldest = GaugeMetricFamily("dw_task_queue_oldest_task_age_seconds", "Age of the oldest waiting task.", labels=labels)
        parked = GaugeMetricFamily("dw_task_queue_parked_polls", "Worker polls parked waiting for a task.", labels=labels)
        queues = sorted(engine.queues.items())
        for (kind, namespace, name), q in queues:
            backlog.add_metric([kind, namespace, name], q.depth())
            oldest.add_metric([kind, namespace, name], q.oldest_age())
            parked.add_metric([kind, namespace, name], len(q.waiters))
        yield from (backlog, oldest, parked)
        yield _histogram("dw_task_queue_poll_wait_seconds", "How long a poll that got a task waited for it.", labels,
                         (([k, ns, n], q.waits) for (k, ns, n), q in queues))

    @staticmethod
    def _journal(journal: Any) -> Iterator[Metric]:
        stats = journal.commit_stats
        yield _histogram("dw_journal_commit_seconds", "Time of one group commit (one transaction).", [], iter([([], stats.seconds)]))
        yield _histogram("dw_journal_commit_batches", "Batches (run transitions) carried by one group commit.", [],
                         iter([([], stats.sizes)]))
        failed = CounterMetricFamily("dw_journal_commit_failures", "Group commits that failed.")
        failed.add_metric([], stats.failed)
        yield failed

    @staticmethod
    def _actors(engine: Any) -> Iterator[Metric]:
        live = GaugeMetricFamily("dw_actors_live", "Run actors in memory on this node.")
        live.add_metric([], len(engine.actors))
        yield live
        for name, key, doc in (("dw_actor_activations", "activations", "Actors started for runs created here."),
                               ("dw_actor_reloads", "reloads", "Actors started by loading a run from the journal."),
                               ("dw_actor_passivations", "passivations", "Actors that left memory (idle, or their shard moved).")):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], engine.counters[key])
            yield family

    @staticmethod
    def _shards(engine: Any, manager: Any) -> Iterator[Metric]:
        owned = GaugeMetricFamily("dw_shards_owned", "Shards this node owns (all of them on a single node).")
        owned.add_metric([], len(engine.owned) if engine.owned is not None else engine.shard_count)
        yield owned
        fenced = CounterMetricFamily("dw_shard_fencing_rejections", "Commits refused because the shard moved (fencing).")
        fenced.add_metric([], engine.counters["fencing_rejections"])
        yield fenced
        counters = manager.counters if manager is not None else {}
        for name, key, doc in (("dw_shard_claims", "claims", "Shards this node claimed."),
                               ("dw_shard_handovers", "handovers", "Shards this node handed over to another."),
                               ("dw_shard_lease_losses", "sessions_lost", "Times this node lost its shard-lease session.")):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], counters.get(key, 0))
            yield family


class RequestMetrics:
    """Per-route request counts and latencies, observed by the API for every answered request."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("dw_http_requests", "HTTP requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=registry)
        self.seconds = Histogram("dw_http_request_seconds", "Time to answer an HTTP request, by route and method.",
                                 ["route", "method"], registry=registry, buckets=REQUEST_SECONDS)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.seconds.labels(route, method).observe(seconds)


def node_registry(node: Any) -> tuple[CollectorRegistry, RequestMetrics]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, CPU seconds, open fds
    return registry, RequestMetrics(registry)


__all__ = ["LATENCY_SECONDS", "NodeCollector", "RequestMetrics", "node_registry"]
