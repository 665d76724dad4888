"""WSGI entry point: `gunicorn wsgi:app`. Settings come from CONNECTOR_CONFIG / env."""

from connector.app import create_app

app = create_app()
