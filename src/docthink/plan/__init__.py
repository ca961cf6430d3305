"""`docthink plan`: what a run will send and what it will cost, before it spends anything."""
