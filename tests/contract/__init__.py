"""The CLI contract: exit codes, --help, --json, --quiet, 80 columns, no colour when asked."""
