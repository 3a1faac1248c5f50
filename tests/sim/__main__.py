from tests.sim.server import main

main()
