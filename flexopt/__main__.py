"""`python -m flexopt` runs the command line."""

from flexopt.cli import main

main()
