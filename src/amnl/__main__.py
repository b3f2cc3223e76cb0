from amnl.cli import main

main()
