"""Month-boundary billing snapshots, policies and reports. Not built yet: see issue 6."""
