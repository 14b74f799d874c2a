-- idx_export_jobs_user_created (user_id, created_at, job_id) serves every lookup by user_id
-- too; the single-column index only made each job insert and status change write one more.
DROP INDEX idx_export_jobs_user_id;
