"""`python -m edge.cli ...` runs the `edge-gemma` command (tests and scripts use it)."""

from edge.cli.app import main

main()
