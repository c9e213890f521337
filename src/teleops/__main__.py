"""`python -m teleops` is `teleops`."""

from teleops.cli import main

if __name__ == "__main__":
    main()
