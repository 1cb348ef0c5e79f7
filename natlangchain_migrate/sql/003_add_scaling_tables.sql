-- 003_add_scaling_tables: coordination between API instances
-- (instance registry, distributed locks, cache, metrics, job queue).

CREATE TABLE IF NOT EXISTS instance_registry (
    instance_id    varchar(64) PRIMARY KEY,
    host           varchar(255) NOT NULL,
    port           integer NOT NULL,
    started_at     timestamptz NOT NULL,
    last_heartbeat timestamptz NOT NULL,
    is_leader      boolean DEFAULT false,
    metadata       jsonb DEFAULT '{}'::jsonb
);

CREATE TABLE IF NOT EXISTS distributed_locks (
    lock_name   varchar(255) PRIMARY KEY,
    owner_id    varchar(64) NOT NULL,
    acquired_at timestamptz DEFAULT CURRENT_TIMESTAMP,
    expires_at  timestamptz NOT NULL,
    metadata    jsonb DEFAULT '{}'::jsonb
);

CREATE TABLE IF NOT EXISTS cache_entries (
    cache_key   varchar(512) PRIMARY KEY,
    cache_value jsonb NOT NULL,
    expires_at  timestamptz,
    created_at  timestamptz DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS metrics_snapshots (
    id           bigserial PRIMARY KEY,
    instance_id  varchar(64),
    metric_name  varchar(255) NOT NULL,
    metric_type  varchar(20) NOT NULL,
    metric_value double precision NOT NULL,
    labels       jsonb DEFAULT '{}'::jsonb,
    recorded_at  timestamptz DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS scheduled_jobs (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_name      varchar(255) NOT NULL,
    job_type      varchar(100) NOT NULL,
    payload       jsonb DEFAULT '{}'::jsonb,
    status        varchar(50) DEFAULT 'pending',
    priority      integer DEFAULT 0,
    max_retries   integer DEFAULT 3,
    retry_count   integer DEFAULT 0,
    scheduled_for timestamptz NOT NULL,
    started_at    timestamptz,
    completed_at  timestamptz,
    locked_by     varchar(64),
    locked_until  timestamptz,
    result        jsonb,
    error_message text,
    created_at    timestamptz DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX IF NOT EXISTS idx_instance_registry_heartbeat ON instance_registry (last_heartbeat);
CREATE INDEX IF NOT EXISTS idx_instance_registry_leader ON instance_registry (is_leader)
    WHERE is_leader;
CREATE INDEX IF NOT EXISTS idx_distributed_locks_expires ON distributed_locks (expires_at);
CREATE INDEX IF NOT EXISTS idx_distributed_locks_owner ON distributed_locks (owner_id);
CREATE INDEX IF NOT EXISTS idx_cache_entries_expires ON cache_entries (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_metrics_snapshots_recorded ON metrics_snapshots (recorded_at);
CREATE INDEX IF NOT EXISTS idx_metrics_snapshots_name ON metrics_snapshots (metric_name);
CREATE INDEX IF NOT EXISTS idx_metrics_snapshots_instance ON metrics_snapshots (instance_id);
CREATE INDEX IF NOT EXISTS idx_scheduled_jobs_status ON scheduled_jobs (status);
CREATE INDEX IF NOT EXISTS idx_scheduled_jobs_due ON scheduled_jobs (scheduled_for)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS idx_scheduled_jobs_locked ON scheduled_jobs (locked_until)
    WHERE locked_by IS NOT NULL;

-- Every function pins the search_path it was created under (SET search_path
-- FROM CURRENT) so that a caller's search_path cannot redirect its queries.

CREATE OR REPLACE FUNCTION acquire_lock(
    p_lock_name varchar,
    p_owner_id varchar,
    p_ttl_seconds integer DEFAULT 30
)
RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_holder varchar;
BEGIN
    DELETE FROM distributed_locks WHERE expires_at < clock_timestamp();

    INSERT INTO distributed_locks (lock_name, owner_id, acquired_at, expires_at)
    VALUES (p_lock_name, p_owner_id, clock_timestamp(),
            clock_timestamp() + make_interval(secs => p_ttl_seconds))
    ON CONFLICT (lock_name) DO UPDATE
        SET expires_at = EXCLUDED.expires_at
        WHERE distributed_locks.owner_id = EXCLUDED.owner_id
    RETURNING owner_id INTO v_holder;

    RETURN v_holder IS NOT NULL;
END;
$$;

CREATE OR REPLACE FUNCTION release_lock(p_lock_name varchar, p_owner_id varchar)
RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM distributed_locks WHERE lock_name = p_lock_name AND owner_id = p_owner_id;
    RETURN FOUND;
END;
$$;

CREATE OR REPLACE FUNCTION cache_get(p_key varchar)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$
    SELECT cache_value
    FROM cache_entries
    WHERE cache_key = p_key
      AND (expires_at IS NULL OR expires_at > clock_timestamp());
$$;

CREATE OR REPLACE FUNCTION cache_set(p_key varchar, p_value jsonb, p_ttl_seconds integer DEFAULT NULL)
RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    INSERT INTO cache_entries (cache_key, cache_value, expires_at, created_at)
    VALUES (p_key, p_value,
            clock_timestamp() + make_interval(secs => p_ttl_seconds),
            clock_timestamp())
    ON CONFLICT (cache_key) DO UPDATE
        SET cache_value = EXCLUDED.cache_value,
            expires_at = EXCLUDED.expires_at,
            created_at = EXCLUDED.created_at;
$$;

CREATE OR REPLACE FUNCTION cache_delete(p_key varchar)
RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM cache_entries WHERE cache_key = p_key;
    RETURN FOUND;
END;
$$;

CREATE OR REPLACE FUNCTION claim_job(
    p_worker_id varchar,
    p_job_types varchar[] DEFAULT NULL,
    p_lock_seconds integer DEFAULT 300
)
RETURNS uuid
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_job_id uuid;
BEGIN
    SELECT id INTO v_job_id
    FROM scheduled_jobs
    WHERE status = 'pending'
      AND scheduled_for <= clock_timestamp()
      AND (p_job_types IS NULL OR job_type = ANY (p_job_types))
      AND (locked_until IS NULL OR locked_until < clock_timestamp())
    ORDER BY priority DESC, scheduled_for ASC
    LIMIT 1
    FOR UPDATE SKIP LOCKED;

    IF v_job_id IS NULL THEN
        RETURN NULL;
    END IF;

    UPDATE scheduled_jobs
    SET status = 'running',
        started_at = clock_timestamp(),
        locked_by = p_worker_id,
        locked_until = clock_timestamp() + make_interval(secs => p_lock_seconds)
    WHERE id = v_job_id;

    RETURN v_job_id;
END;
$$;

CREATE OR REPLACE FUNCTION cleanup_expired_data()
RETURNS TABLE (table_name text, rows_deleted bigint)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count bigint;
BEGIN
    DELETE FROM distributed_locks WHERE expires_at < clock_timestamp();
    GET DIAGNOSTICS v_count = ROW_COUNT;
    table_name := 'distributed_locks'; rows_deleted := v_count; RETURN NEXT;

    DELETE FROM cache_entries WHERE expires_at < clock_timestamp();
    GET DIAGNOSTICS v_count = ROW_COUNT;
    table_name := 'cache_entries'; rows_deleted := v_count; RETURN NEXT;

    DELETE FROM metrics_snapshots WHERE recorded_at < clock_timestamp() - interval '7 days';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    table_name := 'metrics_snapshots'; rows_deleted := v_count; RETURN NEXT;

    DELETE FROM instance_registry WHERE last_heartbeat < clock_timestamp() - interval '5 minutes';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    table_name := 'instance_registry'; rows_deleted := v_count; RETURN NEXT;

    DELETE FROM scheduled_jobs
    WHERE status IN ('completed', 'failed')
      AND coalesce(completed_at, created_at) < clock_timestamp() - interval '7 days';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    table_name := 'scheduled_jobs'; rows_deleted := v_count; RETURN NEXT;
END;
$$;

COMMENT ON TABLE instance_registry IS 'Active API instance registry';
COMMENT ON TABLE distributed_locks IS 'PostgreSQL-based distributed locks';
COMMENT ON TABLE cache_entries IS 'PostgreSQL-based cache';
COMMENT ON TABLE metrics_snapshots IS 'Historical metrics data';
COMMENT ON TABLE scheduled_jobs IS 'Background job queue';
