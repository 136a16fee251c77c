"""What policy authors run: `pdp validate`, `check`, `test`, `fmt` (cli), the policy test runner
(policy_tests), and `pdp bundle build/verify/keygen` (bundle_cli). It may import the engine, the
bundle loader and the model; the sidecar never imports it."""
