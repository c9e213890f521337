"""`python -m teleops.cli`."""

from teleops.cli import main

main()
