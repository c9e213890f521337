"""memory package (see ARCHITECTURE §4)."""
