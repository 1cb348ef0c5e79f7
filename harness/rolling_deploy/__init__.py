"""Rolling deploys under traffic: two releases of an app, a load generator, the rollout."""
