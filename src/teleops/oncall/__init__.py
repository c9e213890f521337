"""oncall package (see ARCHITECTURE §4)."""
