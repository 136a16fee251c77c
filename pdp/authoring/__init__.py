"""What policy authors run: `pdp validate`, `check`, `test`, `fmt` (cli), the policy test runner
(policy_tests), and `pdp bundle build/verify/keygen` (bundle_cli). It may import explain, the engine,
the bundle loader, bundle signing, the token package's keys and the model; never the sidecar, and
the sidecar never imports it."""
