"""Storage: the protocol the write path and the read models use (`protocol`, `rows`), and
its backends (`sqlite/`). SQL is spoken here and nowhere else."""
