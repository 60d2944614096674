"""The run store: Optuna storages (SQLite, journal, PostgreSQL), the settings a stored grid
holds, and the work queue on it (claims, heartbeats, reaping)."""
