"""agent package (see ARCHITECTURE §4)."""
