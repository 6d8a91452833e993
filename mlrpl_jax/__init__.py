"""mlrpl_jax: multi-label recognition with partial labels in JAX/Flax."""
