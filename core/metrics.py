"""The process's Prometheus metrics: one `Metrics` object, built by the composition root and passed in.

Counters live in memory and move where things happen (HTTP middleware, job worker, LLM chain: those
hold a plain callback, not this module). The job queue's gauges are read from the database when
scraped (`core.jobs.stats`), so they are right across processes and restarts. Labels carry only
bounded, non-secret values: route templates, status classes, job kinds, provider names.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.jobs.stats import QueueStats

# Webhooks answer in a few ms, the chat's long poll in seconds: buckets cover both.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STATUS_CLASSES = tuple(f"{n}xx" for n in range(10))
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self) -> None:
        # Our own registry, not prometheus_client's global one: nothing is built at import time, and
        # two apps in one test process do not share counts.
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # CPU, memory, open files, start time (restarts)
        self.http_requests = Counter(
            "cheshire_http_requests",
            "HTTP requests answered, by route template, method and status class.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "cheshire_http_request_duration_seconds",
            "Time from the request reaching the app to its response, by route template and method.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.jobs = Counter(
            "cheshire_jobs_processed",
            "Job runs by kind and outcome: completed, failed (will retry), dead (gave up).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.llm_calls = Counter(
            "cheshire_llm_calls",
            "LLM provider calls by provider and outcome: ok, transient, configuration, skipped.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.integration_calls = Counter(
            "cheshire_integration_calls",
            "Calls to n8n and Twenty CRM by integration and outcome: delivered, retry (5xx, time-out, "
            "connection), rate_limited, not_found, refused, rejected (4xx, dead), skipped (already sent).",
            ["integration", "outcome"],
            registry=self.registry,
        )
        # (route, method, status class) -> the label children: `labels()` validates and locks on every
        # call, a dict lookup does not (the webhook path runs thousands of times a second).
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request. `route` must be a template (/api/chat/{session_id}/messages), never a raw
        path: a label per customer would grow without bound and leak their ids."""
        key = (route, method, status // 100)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children[key] = self._http_child(*key)
        children[0].inc()
        children[1].observe(seconds)

    def _http_child(self, route: str, method: str, status_class: int) -> tuple[Counter, Histogram]:
        method = method if method in _METHODS else "other"
        label = _STATUS_CLASSES[status_class] if 0 <= status_class < 10 else "other"
        return self.http_requests.labels(route, method, label), self.http_duration.labels(route, method)

    def job_outcome(self, kind: str, outcome: str) -> None:
        self.jobs.labels(kind, outcome).inc()

    def llm_call(self, provider: str, outcome: str) -> None:
        self.llm_calls.labels(provider, outcome).inc()

    def integration_call(self, integration: str, outcome: str) -> None:
        self.integration_calls.labels(integration, outcome).inc()

    def render(self, queue: QueueStats | None, *, now: datetime) -> bytes:
        """The text exposition: this process's counters, then the queue as read at scrape time
        (`queue` None: the database did not answer, said by cheshire_jobs_scrape_ok 0)."""
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(_QueueCollector(queue, now))
        return generate_latest(self.registry) + generate_latest(scrape)


class _QueueCollector(Collector):
    def __init__(self, queue: QueueStats | None, now: datetime) -> None:
        self.queue = queue
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ok = GaugeMetricFamily(
            "cheshire_jobs_scrape_ok", "1 when the job queue could be read for this scrape, else 0."
        )
        ok.add_metric([], 0 if self.queue is None else 1)
        yield ok
        if self.queue is None:
            return
        jobs = GaugeMetricFamily(
            "cheshire_jobs",
            "Jobs in the queue by kind and status (queued, running, dead).",
            labels=["kind", "status"],
        )
        for (kind, status), count in sorted(self.queue.counts.items()):
            jobs.add_metric([kind, status], count)
        yield jobs
        yield GaugeMetricFamily(
            "cheshire_jobs_dead",
            "Dead jobs (failed for good; `python -m core.jobs dead` lists them).",
            value=self.queue.dead,
        )
        yield GaugeMetricFamily(
            "cheshire_jobs_oldest_due_age_seconds",
            "How long the oldest queued job whose time has come has waited (0: none is waiting).",
            value=self.queue.oldest_due_age_s(self.now),
        )
