"""Physics tests of diffnb.sim.bloch and diffnb.sim.potential: analytic limits and an independent code (abTEM)."""
import ase
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from diffnb.core import DiffnbValueError, electron_wavenumber
from diffnb.sim.bloch import bloch_amplitudes, bloch_setup, lacbed, lacbed_convergence, pattern_symmetry
from diffnb.sim.potential import potential_coefficients, projected_potential

E = 200.0  # keV


def silicon(b=0.4632):
    a = ase.Atoms("Si8", cell=np.eye(3) * 5.4309, pbc=True,
                  scaled_positions=[[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                                    [.25, .25, .25], [.25, .75, .75], [.75, .25, .75], [.75, .75, .25]])
    a.arrays["b_iso"] = np.full(8, b)
    return a


def srtio3(b=0.5):
    a = ase.Atoms("SrTiO3", scaled_positions=[[0, 0, 0], [.5, .5, .5], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]],
                  cell=np.eye(3) * 3.905, pbc=True)
    a.arrays["b_iso"] = np.full(5, b)
    return a


def gaas():  # zinc blende: non-centrosymmetric, complex U_g
    a = ase.Atoms("Ga4As4", cell=np.eye(3) * 5.6533, pbc=True,
                  scaled_positions=[[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                                    [.25, .25, .25], [.25, .75, .75], [.75, .25, .75], [.75, .75, .25]])
    a.arrays["b_iso"] = np.full(8, 0.6)
    return a


# ---------------------------------------------------------------- analytic limits
@pytest.mark.parametrize("hkl", [(2, 2, 0), (4, 0, 0)])
def test_two_beam_pendelloesung(hkl):
    si = silicon()
    st = bloch_setup(si, E, beams=[(0, 0, 0), hkl], symmetry=False)
    ug = abs(potential_coefficients(si, [hkl], E)[0])
    k0 = electron_wavenumber(E)
    kx = np.linspace(-0.4, 0.4, 9); ky = np.linspace(0.3, -0.1, 9); t = np.array([20., 400., 2000.])
    g = st.g_xy[1]
    k_s = -(2 * (kx * g[0] + ky * g[1]) + g @ g) / 2                     # K s_g (exact)
    dgam = np.sqrt(k_s**2 + ug**2) / np.sqrt(k0**2 - kx**2 - ky**2)       # Bloch-wave splitting Δγ
    expected = ug**2 / (k_s**2 + ug**2) * np.sin(np.pi * dgam[None] * t[:, None]) ** 2
    inten = bloch_amplitudes(st, kx, ky, t, device="cpu").abs().pow(2).numpy()
    np.testing.assert_allclose(inten[:, 1], expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(inten[:, 0], 1 - expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("atoms", [silicon(), gaas()])
def test_norm_conserved_without_absorption(atoms):
    st = bloch_setup(atoms, E, g_max=1.3, symmetry=False)
    kx, ky = np.random.default_rng(0).uniform(-0.6, 0.6, (2, 50))
    psi = bloch_amplitudes(st, kx, ky, [10., 300., 1000., 3000.], device="cpu")
    np.testing.assert_allclose(psi.abs().pow(2).sum(1).numpy(), 1.0, atol=1e-10)


@pytest.mark.parametrize("absorption", [("proportional", 0.1), "bird_king"])
def test_absorption_decreases_intensity(absorption):
    st = bloch_setup(silicon(), E, g_max=1.3, absorption=absorption, symmetry=False)
    kx, ky = np.random.default_rng(1).uniform(-0.6, 0.6, (2, 20))
    t = np.linspace(0, 2000, 21)
    total = bloch_amplitudes(st, kx, ky, t, device="cpu").abs().pow(2).sum(1).numpy()   # (T, P)
    np.testing.assert_allclose(total[0], 1.0, atol=1e-10)
    assert (np.diff(total, axis=0) < 0).all()
    assert total[-1].max() < 0.9


def test_kinematic_limit_thin_crystal():
    si = silicon()
    st = bloch_setup(si, E, g_max=1.3, symmetry=False)
    k0 = electron_wavenumber(E)
    kx, ky, t = np.array([0.05, -0.2, 0.31]), np.array([0.11, 0.07, -0.23]), 4.0
    inten = bloch_amplitudes(st, kx, ky, t, device="cpu").abs().pow(2)[0].numpy()   # (n_beams, P)
    kz = np.sqrt(k0**2 - kx**2 - ky**2)
    for hkl in [(2, 2, 0), (4, 0, 0), (-2, 2, 0)]:
        i = st.hkl.tolist().index(list(hkl))
        ug = abs(potential_coefficients(si, [hkl], E)[0])
        g = st.g_xy[i]
        s_eff = -(2 * (kx * g[0] + ky * g[1]) + g @ g) / 2 / kz             # K s_g / k_z [1/Å]
        kin = (np.pi * ug / kz) ** 2 * (np.sin(np.pi * s_eff * t) / (np.pi * s_eff)) ** 2   # 1st-order perturbation
        np.testing.assert_allclose(inten[i], kin, rtol=0.01)


# ---------------------------------------------------------------- symmetry
def test_si_001_bright_field_4mm_and_symmetry_reduction():
    si = silicon()
    assert len(pattern_symmetry(si)) == 8
    kw = dict(energy_kev=E, thickness=[250.0, 1200.0], pixels=20, alpha=0.6, g_max=1.2, device="cpu",
              discs=[(0, 0, 0), (2, 2, 0), (0, 4, 0)])
    full = lacbed(si, symmetry=False, **kw).numpy()
    fast = lacbed(si, symmetry=True, **kw).numpy()
    np.testing.assert_allclose(fast, full, atol=1e-10)
    bf = full[:, 0]
    for img in [bf[:, ::-1], bf[:, :, ::-1], bf.transpose(0, 2, 1), np.rot90(bf, 1, (1, 2))]:
        np.testing.assert_allclose(img, bf, atol=1e-10)


def test_symmetry_reduction_noncentrosymmetric_and_absorbing():
    kw = dict(energy_kev=E, thickness=[400.0], pixels=12, alpha=0.5, g_max=1.0, device="cpu",
              discs=[(0, 0, 0), (2, 0, 0)], absorption=("proportional", 0.08))
    np.testing.assert_allclose(lacbed(gaas(), symmetry=True, **kw).numpy(),
                               lacbed(gaas(), symmetry=False, **kw).numpy(), atol=1e-10)


@pytest.mark.parametrize("zone,x_dir", [((1, 1, 1), (1, -1, 0)), ((1, 1, 0), (0, 0, 1)), ((0, 1, 2), (1, 0, 0))])
def test_symmetry_reduction_other_zones(zone, x_dir):
    kw = dict(energy_kev=E, thickness=[300.0, 900.0], zone=zone, x_dir=x_dir, pixels=10, alpha=0.4, g_max=1.0,
              device="cpu", discs=[(0, 0, 0)])
    assert len(pattern_symmetry(silicon(), zone, x_dir)) == 4          # 2mm: the square-grid part of 6mm / 2mm
    np.testing.assert_allclose(lacbed(silicon(), symmetry=True, **kw).numpy(),
                               lacbed(silicon(), symmetry=False, **kw).numpy(), atol=1e-10)


def test_half_angle_equivalent_to_alpha_and_pixel_centres():
    from diffnb.core import electron_wavelength
    si = silicon()
    a = lacbed(si, E, 300.0, pixels=8, alpha=0.4, g_max=0.8, device="cpu")
    b = lacbed(si, E, 300.0, pixels=8, half_angle_mrad=0.4 * electron_wavelength(E) * 1000, g_max=0.8, device="cpu")
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-12)
    # pixel (row 0, col 0) is the tilt (-α(N-1)/N, -α(N-1)/N)
    st = bloch_setup(si, E, g_max=0.8)
    k = -0.4 * 7 / 8
    ref = bloch_amplitudes(st, [k], [k], 300.0, out=[0], device="cpu").abs().pow(2)[0, 0, 0]
    assert abs(float(a[0, 0, 0, 0]) - float(ref)) < 1e-12


def test_convergence_in_g_max():
    change, nxt = lacbed_convergence(silicon(), E, [500.0], g_max=1.75, pixels=6, alpha=0.6, device="cpu")
    assert nxt > 1.75 and change < 1e-3


# ---------------------------------------------------------------- independent code: abTEM Bloch waves
def _abtem_bloch(atoms, beams, kx, ky, thickness, b_iso):
    """abTEM's Bloch-wave module with the crystal rotated so that the tilted beam is its z axis."""
    from abtem.bloch import BlochWaves, StructureFactor
    k0 = electron_wavenumber(E)
    khat = np.array([kx, ky, np.sqrt(k0**2 - kx**2 - ky**2)]) / k0
    rot = Rotation.align_vectors([[0, 0, 1]], [khat])[0].as_matrix()
    gmax = np.linalg.norm(beams @ np.linalg.inv(atoms.cell.array).T, axis=1).max()
    sf = StructureFactor(atoms, g_max=4 * gmax + 2, parametrization="kirkland",
                         thermal_sigma=np.sqrt(b_iso / (8 * np.pi**2)))      # σ² = U = B/8π²
    bw = BlochWaves(sf, energy=E * 1e3, sg_max=10.0, g_max=2 * gmax, orientation_matrix=rot, centering="P")
    lut = {tuple(h): i for i, h in enumerate(sf.hkl.tolist())}
    mask = np.zeros(len(sf.hkl), bool); mask[[lut[tuple(h)] for h in beams.tolist()]] = True
    bw._hkl_mask = mask                                                      # exactly our beams
    pos = {tuple(h): i for i, h in enumerate(bw.hkl.tolist())}
    inten = np.asarray(bw.calculate_diffraction_patterns(thickness, lazy=False).array)
    return inten[:, [pos[tuple(h)] for h in beams.tolist()]]


@pytest.mark.parametrize("make,b_iso", [(silicon, 0.4632), (srtio3, 0.5)])
def test_agrees_with_abtem_bloch(make, b_iso):
    atoms = make(b_iso)
    st = bloch_setup(atoms, E, g_max=1.2, symmetry=False)
    t = np.array([100.0, 500.0, 1000.0])
    sel = [st.hkl.tolist().index(h) for h in ([0, 0, 0], [2, 0, 0], [2, 2, 0])]
    for kx, ky in [(0.01, 0.02), (0.12, -0.05)]:
        ours = bloch_amplitudes(st, [kx], [ky], t, device="cpu").abs().pow(2)[..., 0].numpy()
        ref = _abtem_bloch(atoms, st.hkl, kx, ky, t, b_iso)
        np.testing.assert_allclose(ours[:, sel], ref[:, sel], atol=1e-3, rtol=0)


# ---------------------------------------------------------------- projected potential
def test_projected_potential_shifts():
    si = silicon()
    rho = projected_potential(si, pixels=48)
    moved = si.copy(); moved.positions += si.cell[2] - si.cell[0]
    np.testing.assert_allclose(projected_potential(moved, pixels=48), rho, atol=1e-12)
    moved = si.copy(); moved.positions += 7 / 48 * si.cell[0] + 4 / 48 * si.cell[1] + 0.3 * si.cell[2]
    np.testing.assert_allclose(projected_potential(moved, pixels=48), np.roll(rho, (4, 7), axis=(0, 1)), atol=1e-10)


def test_projected_potential_matches_abtem():
    import abtem
    sto = srtio3(b=0.0)            # abTEM's static potential has no Debye-Waller smearing
    ours = projected_potential(sto, pixels=64, normalize=False)
    pot = abtem.Potential(sto, gpts=64, projection="infinite", parametrization="kirkland", slice_thickness=sto.cell[2, 2])
    ref = np.asarray(pot.build().project().compute().array).T
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] >= 0.999


# ---------------------------------------------------------------- input validation
@pytest.mark.parametrize("kwargs,msg", [
    (dict(x_dir=(1, 0, 1)), "x_dir must be perpendicular to zone"),
    (dict(thickness=0.0), "thickness must be positive"),
    (dict(thickness=[100.0, -5.0]), "thickness must be positive"),
    (dict(pixels=1), "pixels must be an integer >= 2"),
    (dict(g_max=0.1), "g_max must be large enough"),
    (dict(parametrization="doyle"), "parametrization must be one of"),
    (dict(alpha=None), "alpha must be given"),
    (dict(half_angle_mrad=5.0), "alpha must be given"),
    (dict(absorption="made-up"), "absorption must be"),
    (dict(discs=[(1, 0, 0)]), "discs must be reflections inside the beam set"),
    (dict(method="qr"), "method must be one of"),
    (dict(chunk=0), "chunk must be an integer >= 1"),
])
def test_bad_inputs_fail_early(kwargs, msg):
    base = dict(atoms=silicon(), energy_kev=E, thickness=100.0, pixels=4, alpha=0.5, g_max=0.8, device="cpu")
    base.update(kwargs)
    with pytest.raises(DiffnbValueError, match=msg):
        lacbed(**base)


# ---------------------------------------------------------------- the two solvers
@pytest.mark.parametrize("crystal,absorption", [(silicon, None), (gaas, None), (silicon, ("proportional", 0.1)),
                                                (gaas, "bird_king")])
def test_expm_equals_eigh(crystal, absorption):
    """Slab propagators exp(2πiΔtA/2k_z) (matrix products only) and the Bloch-wave eigen-decomposition are two
    independent evaluations of the same ψ(t); they must agree for real, complex Hermitian and absorbing A, on an
    even thickness grid (recurrence path) and an uneven unsorted one."""
    st = bloch_setup(crystal(), E, g_max=1.0, absorption=absorption, symmetry=False)
    rng = np.random.default_rng(3)
    kx, ky = rng.uniform(-0.4, 0.4, (2, 11))
    for t in (np.linspace(50, 2000, 40), [1500., 40., 333.3, 900.]):
        a = bloch_amplitudes(st, kx, ky, t, device="cpu", method="eigh").numpy()
        b = bloch_amplitudes(st, kx, ky, t, device="cpu", method="expm").numpy()
        np.testing.assert_allclose(b, a, atol=1e-10)


def test_phase_recurrence_matches_direct_phases():
    """An arithmetic thickness grid uses a phase recurrence; a grid perturbed by 1e-7 Å uses direct phases.
    Both must give the same intensities to the order of the perturbation (dI/dt ~ 1e-3 per Å)."""
    st = bloch_setup(silicon(), E, g_max=1.2, symmetry=False)
    kx, ky = np.array([0.013, 0.21, -0.3]), np.array([0.05, -0.11, 0.27])
    t = np.linspace(10, 3000, 100)
    t2 = t.copy(); t2[50] += 1e-7
    a = bloch_amplitudes(st, kx, ky, t, device="cpu").abs().pow(2).numpy()
    b = bloch_amplitudes(st, kx, ky, t2, device="cpu").abs().pow(2).numpy()
    np.testing.assert_allclose(a, b, atol=1e-8)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-10)


def test_lacbed_widget_shows_the_pattern_of_its_controls():
    import matplotlib
    matplotlib.use("Agg")
    from diffnb.sim.bloch import g_max_for_beams, lacbed_widget
    si = silicon()
    w = lacbed_widget(si, pixels=8, n_beams=21, thickness=[100.0, 700.0, 1300.0], device="cpu")
    gm = g_max_for_beams(si, 21)
    ref = lacbed(si, E, [100.0, 700.0, 1300.0], pixels=8, alpha=0.6, g_max=gm, device="cpu")[:, 0].numpy()
    np.testing.assert_allclose(w.result, ref[1], atol=1e-12)          # starts at the middle thickness
    w.children[0].value = 1300.0                                       # moving the thickness slider
    np.testing.assert_allclose(w.result, ref[2], atol=1e-12)
    w.children[2].value = "Bird & King"                                # absorption lowers the transmitted intensity
    assert w.result.mean() < ref[2].mean()
    with pytest.raises(DiffnbValueError, match="thickness must be positive"):
        lacbed_widget(si, thickness=[0.0, 100.0])


def test_structure_checked_once_per_calculation(monkeypatch):
    "One pass through lacbed (and through bloch_setup, projected_potential) checks the structure once, then passes the checked frame on."
    import diffnb.sim.potential as P
    calls = []
    real = P.check_structure
    monkeypatch.setattr(P, "check_structure", lambda atoms, *a, **k: calls.append(1) or real(atoms, *a, **k))
    si = silicon()
    lacbed(si, 200.0, 100.0, pixels=4, alpha=0.02, g_max=0.8, device="cpu")
    assert len(calls) == 1
    calls.clear(); bloch_setup(si, 200.0, g_max=0.8); assert len(calls) == 1
    calls.clear(); projected_potential(si, pixels=8); assert len(calls) == 1
    bad = si.copy(); bad.positions[0, 0] = np.nan                     # and it still checks
    with pytest.raises(DiffnbValueError, match="finite"): bloch_setup(bad, 200.0)
