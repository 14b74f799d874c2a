DROP TRIGGER export_outbox_inserted ON export_outbox;
CREATE TRIGGER export_outbox_inserted AFTER INSERT ON export_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION export_outbox_notify();
