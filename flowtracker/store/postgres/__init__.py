"""The store protocol on PostgreSQL (psycopg 3, psycopg_pool): several receivers, one database."""
