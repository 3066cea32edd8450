"""The SQLite backend: `connection` (opening, pragmas, locks, pools), `schema`
(migrations), `transaction` (the writes), `queries` (the reads), and `backend`, the
`SQLiteStore` that puts them behind the store protocol."""
