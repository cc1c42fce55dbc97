"""`python -m oddsfeed`: the same as the `oddsfeed` console script."""

from oddsfeed.cli import main

main(prog_name="oddsfeed")
