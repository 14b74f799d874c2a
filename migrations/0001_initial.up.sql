-- Users, the tool registry with its content, export jobs with their step history,
-- event trail and outbox. Statuses and constraints follow seed 002.

CREATE TABLE users (
    user_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text NOT NULL UNIQUE,
    roles       text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tool_registry (
    tool_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tool_name      text NOT NULL,
    -- Which tool types exist is decided by the strategy registry, not the schema.
    tool_type      text NOT NULL,
    owner_id       uuid REFERENCES users(user_id) ON DELETE SET NULL,
    tool_metadata  jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_tool_registry_owner ON tool_registry(owner_id);

-- Form submissions and workflow executions: many rows per tool.
CREATE TABLE tool_records (
    record_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tool_id     uuid NOT NULL REFERENCES tool_registry(tool_id) ON DELETE CASCADE,
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_tool_records_tool ON tool_records(tool_id, record_id);
CREATE INDEX idx_tool_records_tool_created ON tool_records(tool_id, created_at);

-- Fonts, images and media: bytes under a path relative to the tool.
CREATE TABLE tool_assets (
    asset_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tool_id       uuid NOT NULL REFERENCES tool_registry(tool_id) ON DELETE CASCADE,
    path          text NOT NULL,
    content_type  text NOT NULL,
    content       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_tool_assets_tool ON tool_assets(tool_id, asset_id);

CREATE TYPE export_job_status AS ENUM (
    'pending', 'in_progress', 'completed', 'failed', 'cancelled', 'cancelling', 'rolled_back'
);

CREATE TABLE export_jobs (
    job_id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tool_id              uuid NOT NULL REFERENCES tool_registry(tool_id) ON DELETE CASCADE,
    user_id              uuid REFERENCES users(user_id) ON DELETE SET NULL,
    status               export_job_status NOT NULL DEFAULT 'pending',
    format               text NOT NULL,
    options              jsonb NOT NULL DEFAULT '{}',
    attempt              integer NOT NULL DEFAULT 1,
    deliveries           integer NOT NULL DEFAULT 0,
    steps_completed      integer NOT NULL DEFAULT 0,
    steps_total          integer NOT NULL DEFAULT 0,
    current_step         varchar(255),
    progress_percentage  integer NOT NULL DEFAULT 0,
    package_path         varchar(500),
    package_size_bytes   bigint,
    package_sha256       char(64),
    package_expired_at   timestamptz,
    error_code           text,
    error_message        text,
    idempotency_key      text,
    request_hash         text,
    worker_id            text,
    heartbeat_at         timestamptz,
    cancel_requested_at  timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    completed_at         timestamptz,
    CONSTRAINT check_steps_valid CHECK (steps_completed <= steps_total),
    CONSTRAINT check_progress_valid CHECK (progress_percentage BETWEEN 0 AND 100),
    CONSTRAINT check_package_size_valid CHECK (package_size_bytes IS NULL OR package_size_bytes >= 0),
    CONSTRAINT check_attempt_valid CHECK (attempt >= 1),
    CONSTRAINT check_format_valid CHECK (format IN ('package', 'bundle', 'csv', 'xlsx', 'pdf'))
);
CREATE INDEX idx_export_jobs_tool_id ON export_jobs(tool_id);
CREATE INDEX idx_export_jobs_user_id ON export_jobs(user_id);
CREATE INDEX idx_export_jobs_status ON export_jobs(status);
CREATE INDEX idx_export_jobs_created_at ON export_jobs(created_at);
-- Keyset pagination of a user's history: (created_at, job_id) is the cursor.
CREATE INDEX idx_export_jobs_user_created ON export_jobs(user_id, created_at DESC, job_id DESC);
CREATE UNIQUE INDEX idx_export_jobs_idempotency ON export_jobs(user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The reaper looks only at running jobs.
CREATE INDEX idx_export_jobs_running_heartbeat ON export_jobs(heartbeat_at)
    WHERE status IN ('in_progress', 'cancelling');

-- One row per step per attempt of a job: what ran, how often, how long, how it ended.
CREATE TABLE export_job_steps (
    job_id       uuid NOT NULL REFERENCES export_jobs(job_id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    position     integer NOT NULL,
    name         text NOT NULL,
    status       text NOT NULL CONSTRAINT check_step_status CHECK (
                     status IN ('running', 'completed', 'failed', 'undone', 'undo_failed')),
    tries        integer NOT NULL DEFAULT 0,
    started_at   timestamptz,
    finished_at  timestamptz,
    error        text,
    PRIMARY KEY (job_id, attempt, position)
);

-- Audit trail: created, started, step_completed, retry, failed, rollback, cancel...
CREATE TABLE export_job_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES export_jobs(job_id) ON DELETE CASCADE,
    kind        text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_export_job_events_job ON export_job_events(job_id, event_id);

-- Transactional outbox: written with the job row, published by the relay.
CREATE TABLE export_outbox (
    outbox_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exchange      text NOT NULL,
    routing_key   text NOT NULL,
    message_id    text NOT NULL,
    body          jsonb NOT NULL,
    headers       jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    tries         integer NOT NULL DEFAULT 0,
    last_error    text
);
CREATE INDEX idx_export_outbox_unpublished ON export_outbox(outbox_id) WHERE published_at IS NULL;

CREATE FUNCTION export_outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('exporter_outbox', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER export_outbox_inserted AFTER INSERT ON export_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION export_outbox_notify();
