"""WSGI entry point: `gunicorn wsgi:app`. Settings come from CONNECTOR_CONFIG / env."""

from connector.app import create_app, settle_memory

app = create_app()
settle_memory()
