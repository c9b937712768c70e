"""Look-ahead active learning with the pNTK or any kernel (Mohamadi, Bae & Sutherland, NeurIPS 2022).

`lookahead_scores` scores each pool candidate by how much labelling it (with the model's predicted
label, or every label weighted by the model's probabilities) would change the linearized network's
predictions on the pool, by a block-inverse update of the kernel-regression solve per candidate;
`select` takes the highest; `acquire` runs one round from a network and a kernel function,
`run_rounds` several. See the user guide's "Look-ahead active learning".
"""

from nt_pntk._src.recipes.active_learning import acquire, lookahead_scores, run_rounds, select

__all__ = ["acquire", "lookahead_scores", "run_rounds", "select"]
