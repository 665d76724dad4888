"""WSGI entry point: `gunicorn wsgi:app`. Settings come from CONNECTOR_CONFIG / env."""

from connector.app import server_app

app = server_app()
