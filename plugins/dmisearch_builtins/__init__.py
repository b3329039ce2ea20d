"""dmisearch's built-in components, registered through the ``dmisearch`` entry-point group
exactly like a third-party plugin package (see pyproject.toml)."""
