"""AIME-core in PyTorch (aime.md): the reference's core with its state_dict keys, split by part:
`prims` (primitives, spectral norm, custom gradients), `perceiver` (VQ tokenizer, Perceiver
predictor, global context), `nvae` (encoder/decoder, MDL head, gram loss), `prior` (DPGMM prior
and its KL terms), `attention` (attention schema), `model` (the module and the training
forward), `train` (RGB, AdamW groups, EMA teacher, one training step)."""
