DROP TABLE IF EXISTS workflow_executions;
