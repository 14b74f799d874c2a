-- Only request rows wake the relay at once. A NOTIFY makes its transaction's commit take
-- PostgreSQL's notification-queue lock, which serialises those commits: with every job's
-- completion notifying, completions queued behind one another's WAL flush. Completion events
-- now go out with the next batch or within EXPORTER_RELAY_POLL_SECONDS.
DROP TRIGGER export_outbox_inserted ON export_outbox;
CREATE TRIGGER export_outbox_inserted AFTER INSERT ON export_outbox
    FOR EACH ROW WHEN (NEW.exchange = 'requests') EXECUTE FUNCTION export_outbox_notify();
