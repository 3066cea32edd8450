"""Read models over the store: the JSON of subjects, lists, the quarantine and anomalies
(`views`), the totals (`summaries`), their text for a terminal (`text`), a lifecycle laid
out for drawing (`diagram`), and Prometheus metrics (`metrics`)."""
