"""Prometheus metrics. Labels are bounded sets only: never a job id or user id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

JOBS_SUBMITTED = Counter("exporter_jobs_submitted_total", "Export jobs accepted.", ["tool_type", "format"])
JOBS_FINISHED = Counter(
    "exporter_jobs_finished_total",
    "Export jobs that reached a terminal status.",
    ["tool_type", "format", "status"],
)
JOB_DURATION = Histogram(
    "exporter_job_duration_seconds",
    "Time from a job's start to its terminal status.",
    ["tool_type", "format", "status"],
    buckets=DURATION_BUCKETS,
)
STEP_DURATION = Histogram(
    "exporter_step_duration_seconds",
    "Time a step took, by outcome.",
    ["strategy", "step", "outcome"],
    buckets=DURATION_BUCKETS,
)
STEP_RETRIES = Counter(
    "exporter_step_retries_total",
    "Step attempts retried after a transient error.",
    ["strategy", "step"],
)
ROLLBACKS = Counter(
    "exporter_rollbacks_total",
    "Jobs whose completed steps were undone.",
    ["tool_type", "format", "reason"],
)
JOBS_IN_PROGRESS = Gauge(
    "exporter_jobs_in_progress", "Jobs this worker is running now.", ["tool_type", "format"]
)
ROWS_EXPORTED = Counter("exporter_rows_exported_total", "Records written to exports.", ["format"])
QUEUE_MESSAGES = Gauge(
    "exporter_queue_messages", "Messages ready in a queue, read from the broker.", ["queue"]
)
DLQ_MESSAGES = Gauge("exporter_dlq_messages", "Messages waiting in the dead-letter queue.")
DEAD_LETTERED = Counter("exporter_dead_lettered_total", "Messages sent to the dead-letter queue.", ["reason"])
OUTBOX_BACKLOG = Gauge("exporter_outbox_backlog", "Outbox messages not yet published.")
OUTBOX_LAG = Gauge("exporter_outbox_lag_seconds", "Age of the oldest unpublished outbox message.")
OUTBOX_PUBLISHED = Counter("exporter_outbox_published_total", "Outbox messages published.")
JOBS_BY_STATUS = Gauge("exporter_jobs_by_status", "Jobs in the table by status.", ["status"])
HTTP_REQUESTS = Counter(
    "exporter_http_requests_total", "HTTP requests served.", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "exporter_http_request_duration_seconds",
    "HTTP request latency by route.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CLEANUP_DELETED = Counter(
    "exporter_cleanup_deleted_total", "Jobs and packages removed by retention.", ["kind"]
)
