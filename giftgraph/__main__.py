from giftgraph.cli import main

main()
