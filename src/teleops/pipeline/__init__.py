"""pipeline package (see ARCHITECTURE §4)."""
