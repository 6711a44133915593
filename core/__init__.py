"""Code shared by the API and the worker: settings, schema, job spec, states, events."""
