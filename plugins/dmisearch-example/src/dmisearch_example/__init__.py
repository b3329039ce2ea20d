"""dmisearch plugin example."""
