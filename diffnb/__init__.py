"""Machine learning on diffraction images: fast, validated simulators, fastai learners and reproducible workflows

Modules:

- `diffnb.sim.bloch`: Bloch-wave dynamical simulation of large-angle convergent-beam (LACBED) patterns, batched in torch: zero-order-Laue-zone beams, exact excitation errors, absorption (none / proportional / Bird & King), all thicknesses from one eigen-decomposition, and the pattern's point symmetry used to solve only the irreducible pixels.
- `diffnb.sim.kinematic`: Kinematic single-crystal electron diffraction of 2-D materials: crystallites, perturbations (vacancies, strain, thermal motion, amorphisation), the diffraction pattern by a non-uniform FFT or an exact separable DFT, optional Ewald-sphere curvature, dose noise and difference images.
- `diffnb.sim.mote2`: Monolayer MoTe2 (2H and 1T'): structures shipped with diffnb, phonon snapshots as displacement fields, the 2H→1T' transformation path, and the seeded samplers of the `mote2` study (seven labelled classes, and the VAE sets).
- `diffnb.sim.potential`: Crystallographic structure factors F(g) from electron scattering factors, the Bloch-wave potential coefficients U_g, zone-axis frames and zero-order-Laue-zone lattices, and the projected potential ρ(r) of one unit cell (Webb, Beanland & Römer 2024, Eq. 1).
- `diffnb.sim.speckle`: Coherent X-ray speckle of random 2-D disk systems (mono- and polydisperse): disk placement, analytic speckle by separable matrix DFT or finufft, the study's rasterise + FFT reference path, preprocessing, the first-moment baseline with a nearest-class-mean classifier, and a labelled sampler."""

__version__ = "0.0.1"
