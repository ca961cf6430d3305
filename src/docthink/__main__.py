"""`python -m docthink`: the `docthink` command."""

from docthink.cli import main

main()
