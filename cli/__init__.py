"""The `trainhub` command: server verbs now, HTTP client verbs beside them later."""
