"""The `adapt` command line."""
