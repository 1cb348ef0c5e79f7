-- Undoes 003_add_scaling_tables.
DROP FUNCTION IF EXISTS cleanup_expired_data();
DROP FUNCTION IF EXISTS claim_job(varchar, varchar[], integer);
DROP FUNCTION IF EXISTS cache_delete(varchar);
DROP FUNCTION IF EXISTS cache_set(varchar, jsonb, integer);
DROP FUNCTION IF EXISTS cache_get(varchar);
DROP FUNCTION IF EXISTS release_lock(varchar, varchar);
DROP FUNCTION IF EXISTS acquire_lock(varchar, varchar, integer);
DROP TABLE IF EXISTS scheduled_jobs;
DROP TABLE IF EXISTS metrics_snapshots;
DROP TABLE IF EXISTS cache_entries;
DROP TABLE IF EXISTS distributed_locks;
DROP TABLE IF EXISTS instance_registry;
