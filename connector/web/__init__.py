"""The admin web UI (server-rendered with Jinja)."""
