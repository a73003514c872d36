"""The reliability suite (issue 10): data loss, reading outside the bundle, silently wrong images,
tracebacks, inputs accepted that should not be, leftovers after kill -9; property tests and a kill test."""
