"""Differentiable building blocks of Allegro, each a forward and a hand-written backward (VJP).

Pattern: ``out, cache = block_forward(...)`` and ``grads = block_backward(..., cache, grad_out)``.
"""
