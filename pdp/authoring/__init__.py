"""What policy authors run: `pdp validate`, `check`, `test`, `fmt` (cli), the policy test runner
(policy_tests), `pdp bundle build/verify/keygen` (bundle_cli), `pdp playground` (playground, its
HTTP in playground_http, assets in playground_assets/), `pdp lsp` (lsp, pygls in lsp_server) and
the editor grammar (editors/). It may import explain, the engine,
the bundle loader, bundle signing, the token package's keys and the model; never the sidecar, and
the sidecar never imports it."""
