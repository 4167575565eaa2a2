"""Machine learning on diffraction images: fast, validated simulators, fastai learners and reproducible workflows

Modules:

- `diffnb.analysis`: Classical measurements on diffraction images: masked, batched azimuthal averages; ring intensities; the Debye–Waller ΔB and the lattice temperature of bismuth from a time series of ring images.
- `diffnb.cli`: The `diffnb` command: `diffnb --help`, `diffnb --version`, and subcommands that dispatch to the library.
- `diffnb.core`: Units, CODATA constants, relativistic electron optics, input validation and the error hierarchy, device and RNG helpers.
- `diffnb.data.batches`: Batch-level reading of a store for training: whole Zarr chunks into one tensor, shuffled by chunk and then within a buffer, cached in memory when the fold fits, wrapped as fastai `DataLoaders`.
- `diffnb.data.generation`: Generation of a sampler's samples into a Zarr store with Dask (local or distributed), resumable after a crash and bitwise reproducible, and `verify`/`repair` of a store.
- `diffnb.data.loaders`: fastai DataLoaders on float intensities from a Zarr store (multi-worker) or simulated on the fly from a sampler, with recorded intensity transforms and `show_batch`/`show_results` for float images.
- `diffnb.data.sampler`: The sampler protocol every simulator implements, a tiny exact N-slit sampler, and the registry that builds samplers by name.
- `diffnb.data.split`: Reproducible, leak-free splits of a dataset: random, stratified or grouped, two-way or k-fold, saved with the store.
- `diffnb.data.store`: Zarr v3 stores of labelled samples: the format and its provenance checksum, what belongs to a store, the writer lock, and `SampleStore`, a lazy reader that checks every chunk it reads.
- `diffnb.data.store_cli`: The `diffnb generate`, `diffnb verify` and `diffnb repair` commands.
- `diffnb.explore`: Interactive views of every simulator: move a control, see the pattern change, in Jupyter or as a local web app (`diffnb explore`)
- `diffnb.explore_models`: Explorers of trained models: move a simulation parameter and see the model's prediction next to the truth, or walk through a VAE's latent space (`diffnb explore model|latent --model DIR`)
- `diffnb.scattering`: Electron and X-ray atomic scattering factors, Debye–Waller factors, and the temperature dependence of B for bismuth.
- `diffnb.sim.bloch`: Bloch-wave dynamical simulation of large-angle convergent-beam (LACBED) patterns, batched in torch: zero-order-Laue-zone beams, exact excitation errors, absorption (none / proportional / Bird & King), all thicknesses from one eigen-decomposition, and the pattern's point symmetry used to solve only the irreducible pixels.
- `diffnb.sim.detector`: Instrument and detector model shared by all simulators: central beam, beam stop, background, substrate rings, blur, gain, shot and readout noise, bad pixels, distortion, saturation — and `LabDomain`, which draws all of them per image to turn ideal images into lab-like ones.
- `diffnb.sim.kinematic`: Kinematic single-crystal electron diffraction of 2-D materials: crystallites, perturbations (vacancies, strain, thermal motion, amorphisation), the diffraction pattern by a non-uniform FFT or an exact separable DFT, optional Ewald-sphere curvature, dose noise and difference images.
- `diffnb.sim.mote2`: Monolayer MoTe2 (2H and 1T'): structures shipped with diffnb, phonon snapshots as displacement fields, the 2H→1T' transformation path, and the seeded samplers of the `mote2` study (seven labelled classes, and the VAE sets).
- `diffnb.sim.potential`: Crystallographic structure factors F(g) from electron scattering factors, the Bloch-wave potential coefficients U_g, zone-axis frames and zero-order-Laue-zone lattices, and the projected potential ρ(r) of one unit cell (Webb, Beanland & Römer 2024, Eq. 1).
- `diffnb.sim.powder`: Kinematic electron powder (polycrystalline ring) patterns with Debye–Waller damping: 1-D profiles I(s), 2-D ring images, the bismuth preset of the `bismuth` study, and a labelled sampler of ideal and lab-like Bi ring images.
- `diffnb.sim.refine`: Refinement of thickness, Debye–Waller factors and low-order structure factors against LACBED bright-field patterns, by gradient through a differentiable Bloch-wave forward model (after FELIX, Beanland et al.).
- `diffnb.sim.speckle`: Coherent X-ray speckle of random 2-D disk systems (mono- and polydisperse): disk placement, analytic speckle by separable matrix DFT or finufft, the study's rasterise + FFT reference path, preprocessing, the first-moment baseline with a nearest-class-mean classifier, and labelled samplers (fresh radii per pattern, the study's radii fixed per class, or the study's draw of radii fresh per pattern).
- `diffnb.structure`: Crystal structures as `ase.Atoms`: reading CIF (symmetry-expanded, with occupancies and displacement parameters) and other formats, and random but valid cubic crystals for all 36 cubic space groups."""

__version__ = "0.0.1"
