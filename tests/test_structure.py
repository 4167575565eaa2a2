"""diffnb.structure: CIF reading (symmetry, occupancy, B), POSCAR, bad input, random cubic crystals."""
import numpy as np
import pytest
import spglib

from diffnb.core import DiffnbFileNotFoundError, StructureError
from diffnb.structure import random_cubic_crystal, read_structure


def cif(sg, cell, sites, disp="U"):
    a, b, c, al, be, ga = cell
    rows = "\n".join(" ".join(map(str, s)) for s in sites)
    return (f"data_t\n_cell_length_a {a}\n_cell_length_b {b}\n_cell_length_c {c}\n_cell_angle_alpha {al}\n"
            f"_cell_angle_beta {be}\n_cell_angle_gamma {ga}\n_symmetry_space_group_name_H-M '{sg}'\nloop_\n"
            f"_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
            f"_atom_site_occupancy\n_atom_site_{disp}_iso_or_equiv\n{rows}\n")


def test_cif_file_and_spglib_roundtrip(tmp_path):
    p = tmp_path / "srtio3.cif"
    p.write_text(cif("P m -3 m", (3.905,) * 3 + (90,) * 3,
                     [("Sr", "Sr", 0, 0, 0, 1, 0.005), ("Ti", "Ti", .5, .5, .5, 1, 0.004), ("O", "O", .5, .5, 0, 1, 0.007)]))
    at = read_structure(p)
    assert len(at) == 5
    assert spglib.get_symmetry_dataset((at.cell[:], at.get_scaled_positions(), at.numbers)).number == 221
    np.testing.assert_allclose(sorted(at.arrays["b_iso"]), sorted(8 * np.pi**2 * np.array([0.005, 0.004] + [0.007] * 3)))


def test_gaas_density():
    at = read_structure(cif("F -4 3 m", (5.653,) * 3 + (90,) * 3, [("Ga", "Ga", 0, 0, 0, 1, .008), ("As", "As", .25, .25, .25, 1, .007)]))
    density = at.get_masses().sum() * 1.66053907e-24 / (at.get_volume() * 1e-24)
    assert density == pytest.approx(5.32, abs=0.02)      # g/cm³, handbook value of GaAs


def test_bismuth_asymmetric_unit():
    at = read_structure(cif("R -3 m", (4.546, 4.546, 11.862, 90, 90, 120), [("Bi1", "Bi", 0, 0, 0.2339, 1, 1.15)], disp="B"))
    assert len(at) == 6
    assert np.allclose(at.arrays["b_iso"], 1.15)
    # nearest-neighbour Bi–Bi distance of the A7 structure ≈ 3.07 Å
    d = at.get_all_distances(mic=True)
    assert d[d > 0.1].min() == pytest.approx(3.07, abs=0.02)


def test_mixed_occupancy_total():
    at = read_structure(cif("F m -3 m", (4.26,) * 3 + (90,) * 3,
                            [("Fe", "Fe", 0, 0, 0, .7, .006), ("Co", "Co", 0, 0, 0, .3, .006), ("O", "O", .5, .5, .5, 1, .008)]))
    occ, sym = at.arrays["occupancy"], np.array(at.get_chemical_symbols())
    assert occ[sym != "O"].sum() == pytest.approx(4.0)


def test_poscar(shared_data):
    at = read_structure(shared_data / "mote2" / "unit_cells" / "CONTCAR_2H")
    assert at.get_chemical_formula() == "Mo2Te4"
    assert np.allclose(at.arrays["occupancy"], 1)


@pytest.mark.parametrize("text, match", [
    ("data_x\nloop_\n_atom_site_label\n", "no _atom_site_fract_x"),
    (cif("P 1", (4,) * 3 + (90,) * 3, [("A", "Si", 0, 0, 0, 0, .01)]), "occupancy"),
    (cif("P 1", (4,) * 3 + (90,) * 3, [("A", "Si", 0, 0, 0, 1, 9.0)]), "b_iso"),
    (cif("P 1", (4,) * 3 + (90,) * 3, [("A", "Si", 0, 0, 0, 1, .01)]).replace("_cell_length_c 4\n", ""), "missing unit cell"),
])
def test_bad_cif(text, match):
    with pytest.raises(StructureError, match=match):
        read_structure(text)


def test_missing_file():
    with pytest.raises(DiffnbFileNotFoundError, match="not found"):
        read_structure("does/not/exist.cif")


@pytest.mark.parametrize("sg", [198, 205, 214, 220, 227, 230])
def test_random_cubic_varies_with_seed(sg):
    seen = set()
    for seed in range(4):
        at = random_cubic_crystal(sg, seed)
        assert spglib.get_symmetry_dataset((at.cell[:], at.get_scaled_positions(), at.numbers), symprec=1e-3).number == sg
        d = at.get_all_distances(mic=True)
        assert d[d > 0].min() > 0.7                         # no overlapping atoms
        seen.add((round(at.cell.lengths()[0], 6), tuple(at.numbers)))
    assert len(seen) > 1
