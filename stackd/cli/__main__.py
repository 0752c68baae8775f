from stackd.cli.main import main

main()
