"""wire package (see ARCHITECTURE §4)."""
