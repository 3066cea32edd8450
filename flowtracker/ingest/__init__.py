"""The write path: a callback request in (`interface`), parsed and quarantined or handed to
group commit (`intake`, `committer`), deduplicated, folded and stored in one transaction
(`pipeline`), its receipt out; in `serve`, across a socket to one writer process (`wire`,
`remote_intake`, `writer`); and `replay` of a file through the same pipeline."""
