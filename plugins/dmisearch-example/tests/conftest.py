# Fixtures of the dmisearch conformance kit (register_plugin, plugin_registry).
pytest_plugins = ["dmisearch.testing"]
