"""Harnesses that test the engine as a whole, from outside: the chaos run (workers killed
at random), the network partition run, and the throughput bench."""
