"""`python -m flexopt` runs the command line."""

from flexopt.cli import main

if __name__ == "__main__":  # not when `--workers` processes (spawn) import this module
    main()
