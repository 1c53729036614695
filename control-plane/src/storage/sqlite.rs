//! The embedded durable store: SQLite in WAL mode with group commit.
