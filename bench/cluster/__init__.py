"""Grids and searches on a cluster: a job array of ordinary runners on one shared store
(submitit, Slurm or its local executor). The scheduler decides where; the store's claim
and heartbeat queue decides what, so every cell still runs exactly once."""
