"""pdp's benchmark suite: seeded scenarios with oracles, baselines, the engine benches, peers."""
