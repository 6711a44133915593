"""Sweeps: hyperparameter searches whose trials are ordinary jobs.

`spec` is the body of POST /sweeps and its checks; `space` the distributions and how a trial's
values follow from the sweep's seed and the trial's number alone; `trials` makes trials up to
`max_concurrent` (the scheduler: idempotent, safe to run twice at once, re-run by every
worker's reaper); `lifecycle` creates, cancels and deletes a sweep; `summary` reads one."""
