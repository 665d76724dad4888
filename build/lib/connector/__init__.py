"""The connector: identity-provider provisioning, status authority and billing."""
