"""PyTorch reference implementations whose state_dict layout matches the public checkpoints."""
