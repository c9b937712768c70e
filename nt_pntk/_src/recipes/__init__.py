"""What researchers compute the pNTK for: look-ahead active learning, data attribution through a
kernel surrogate, trainability at initialization (one module each; public as `nt_pntk.active_learning`,
`nt_pntk.attribution`, `nt_pntk.trainability`)."""
