CREATE INDEX idx_export_jobs_user_id ON export_jobs(user_id);
