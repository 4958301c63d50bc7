"""Maintenance duties, each a Config and a ``run_once(now)`` (River's shape): rescue of
expired leases, firing of cron and poller slots, pruning of finished jobs."""
