from docthink.cli import main

main()
