"""DDP jobs (world_size > 1): rank 0 runs in the worker's pool process and launches the
helper ranks as subprocesses (launch), each of which runs rank's main(); every rank's loop
sees the group through group.Distributed."""
