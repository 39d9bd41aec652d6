from registry.cli.app import main

main()
