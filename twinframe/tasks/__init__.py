"""Tasks: data generation and scoring shared by the torch and JAX frameworks."""
