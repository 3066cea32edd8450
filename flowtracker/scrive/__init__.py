"""Scrive's side: `flowtracker simulate`, which makes up flow instances and documents
(`scenarios`, `paper`, `payloads`, `traffic`), delivers their callbacks as Scrive would
(`schedule`, `sender`, `link`) and checks the tracker's answers (`simulate`, `cli`)."""
