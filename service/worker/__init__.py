"""The worker: consumes export requests and runs each job's strategy."""
