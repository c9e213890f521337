"""chat package (see ARCHITECTURE §4)."""
