"""The Entra ID poller (Microsoft Graph delta queries). Not built yet: see issue 5."""
