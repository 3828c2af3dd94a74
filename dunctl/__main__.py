from dunctl.cli.app import main

main()
