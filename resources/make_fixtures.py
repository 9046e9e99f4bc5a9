"""Generate the small, physics-based 4D-STEM test fixtures in resources/ with abTEM multislice.

Run from the repository root:  python resources/make_fixtures.py   (needs the `sim` extra: abtem, ase)

Every reference value stored next to the data (`abtem_*` keys) is computed by abTEM itself, on the very
DiffractionPatterns object whose array is saved as `data`, so the tests need no abTEM and compare against an
independent implementation. See resources/README.md for the layout and the physics parameters.
"""
from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

import abtem
import ase
import ase.build
from abtem.core.energy import energy2wavelength

HERE = pathlib.Path(__file__).resolve().parent
ENERGY = 60e3  # eV
POTENTIAL_SAMPLING = 0.075  # Å: antialias cutoff ~216 mrad, room for the 80-200 mrad HAADF detector
HAADF = (80.0, 200.0)  # mrad
SIGMA = 0.08  # Å, frozen-phonon displacement (per direction)
NUM_CONFIGS = 4
# float32 mantissa bits kept in the saved patterns: relative rounding error <= 2**-11 ~ 5e-4, ~25% smaller .npz
SIGNIFICANT_BITS = 10
GRAPHENE_A = 2.46  # Å


def graphene_si(si_targets: list[tuple[float, float]], vacancy_targets: list[tuple[float, float]],
                reps: tuple[int, int] = (10, 6)) -> ase.Atoms:
    """Single-layer graphene (orthogonal 24.6 x 25.6 Å cell), C -> Si at the atoms nearest si_targets (Si
    raised 1 Å out of plane, as observed for Si substitutions) and C removed nearest vacancy_targets."""
    cell = ase.build.graphene(formula="C2", a=GRAPHENE_A, thickness=0.0, vacuum=2.0)
    atoms = abtem.orthogonalize_cell(cell) * (reps[0], reps[1], 1)
    xy = atoms.positions[:, :2]
    for target in si_targets:
        i = int(np.argmin(np.linalg.norm(xy - np.asarray(target), axis=1)))
        atoms.numbers[i] = 14
        atoms.positions[i, 2] += 1.0
    remove = [int(np.argmin(np.linalg.norm(xy - np.asarray(t), axis=1))) for t in vacancy_targets]
    del atoms[remove]
    atoms.center(vacuum=2.0, axis=2)
    return atoms


def to_saved_layout(array: np.ndarray) -> np.ndarray:
    """abTEM orders axes (scan_x, scan_y, k_x, k_y); the engine wants (scan_y, scan_x, det_y, det_x)."""
    return np.ascontiguousarray(array.transpose(1, 0, 3, 2) if array.ndim == 4 else array.T)


def quantize(array: np.ndarray, bits: int = SIGNIFICANT_BITS) -> np.ndarray:
    """Round float32 values to nearest with `bits` mantissa bits (zeroed low bits compress better)."""
    a = np.asarray(array, dtype=np.float32)
    drop = 23 - bits
    as_int = a.view(np.uint32)
    rounded = (as_int + np.uint32(1 << (drop - 1))) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return rounded.view(np.float32)


def detect(patterns: abtem.measurements.DiffractionPatterns,
           max_angle: float) -> abtem.measurements.DiffractionPatterns:
    """Native patterns -> square pixels (abTEM 'uniform' resampling) -> crop to +-max_angle -> float32 quantized.

    The returned object is exactly what gets saved and what every abTEM reference is computed on."""
    square = patterns.interpolate("uniform").crop(max_angle=max_angle)
    kwargs = square._copy_kwargs(exclude=("array",))
    return square.__class__(array=quantize(np.asarray(square.array)), **kwargs)


def simulate(name: str, atoms: ase.Atoms, semiangle: float, scan_start: tuple[float, float], scan_step: float,
             scan_n: int, max_angle: float, annular: dict[str, tuple[float, float]], seed: int) -> dict:
    """Run the multislice scan and return the arrays/scalars of one fixture file."""
    frozen = abtem.FrozenPhonons(atoms, num_configs=NUM_CONFIGS, sigmas=SIGMA, seed=seed)
    potential = abtem.Potential(frozen, sampling=POTENTIAL_SAMPLING, slice_thickness=1.0,
                                parametrization="lobato", projection="infinite")
    probe = abtem.Probe(energy=ENERGY, semiangle_cutoff=semiangle)
    probe.grid.match(potential)
    end = (scan_start[0] + scan_n * scan_step, scan_start[1] + scan_n * scan_step)
    scan = abtem.GridScan(start=scan_start, end=end, gpts=scan_n, endpoint=False)
    # Crop a little wider than the saved detector so the resampling never touches the crop edge.
    pixelated = abtem.PixelatedDetector(max_angle=max_angle + 8.0)
    haadf = abtem.AnnularDetector(inner=HAADF[0], outer=HAADF[1])
    t0 = time.perf_counter()
    measurements = probe.scan(potential, scan=scan, detectors=[pixelated, haadf])
    measurements.compute(scheduler="threads", num_workers=2, progress_bar=False)
    native, survey = measurements[0], measurements[1]
    print(f"{name}: multislice {time.perf_counter() - t0:.0f} s, native detector {native.array.shape[-2:]}, "
          f"sampling {native.angular_sampling} mrad")
    patterns = detect(native, max_angle)

    # The same probe in vacuum, detected by the identical pipeline (PixelatedDetector uses parity="same").
    vacuum_waves = probe.build(scan=np.array([[0.0, 0.0]]), lazy=False)
    vacuum = vacuum_waves.diffraction_patterns(max_angle=max_angle + 8.0, parity="same")
    vacuum = detect(vacuum, max_angle)
    assert vacuum.array.shape[-2:] == patterns.array.shape[-2:]
    assert np.allclose(vacuum.angular_sampling, patterns.angular_sampling)

    com = patterns.center_of_mass(units="mrad").array  # complex: real = x, imag = y, relative to zero angle
    com_ref = vacuum.center_of_mass(units="mrad").array.reshape(-1)[0]
    out: dict = {
        "data": to_saved_layout(np.asarray(patterns.array, dtype=np.float32)),
        "survey": to_saved_layout(np.asarray(survey.array, dtype=np.float32)),
        "reference": to_saved_layout(np.asarray(vacuum.array, dtype=np.float32).reshape(patterns.array.shape[-2:])),
        "mrad_per_px": float(patterns.angular_sampling[0]),
        "nm_per_px": scan_step / 10.0,
        "semiangle_mrad": float(semiangle),
        "energy_ev": ENERGY,
        # (scan_y, scan_x, 2): [..., 0] = x (det column axis), [..., 1] = y (det row axis)
        "abtem_com_mrad": np.stack([com.real.T, com.imag.T], axis=-1).astype(np.float64),
        "abtem_reference_com_mrad": np.array([com_ref.real, com_ref.imag], dtype=np.float64),
        "si_positions_px": _si_positions_px(atoms, scan_start, scan_step),
    }
    for key, (inner, outer) in annular.items():
        # integrate_radial is exactly what abTEM's AnnularDetector computes (mask inner <= alpha < outer around
        # the zero-angle pixel), applied here to the saved, square-pixel patterns.
        out[key] = np.asarray(patterns.integrate_radial(inner, outer).array, dtype=np.float64).T
        out[f"{key}_inner_mrad"] = float(inner)
        out[f"{key}_outer_mrad"] = float(outer)
        vac = vacuum.integrate_radial(inner, outer).array
        out[f"{key}_reference"] = float(np.asarray(vac).reshape(-1)[0])
    return out


def _si_positions_px(atoms: ase.Atoms, scan_start: tuple[float, float], scan_step: float) -> np.ndarray:
    """Si atoms as (row, col) = (y, x) in scan pixels, for checking where the demo's |CoM| maxima lie."""
    si = atoms.positions[atoms.numbers == 14, :2]
    return np.stack([(si[:, 1] - scan_start[1]) / scan_step, (si[:, 0] - scan_start[0]) / scan_step], axis=1)


def bragg_distance_mrad(a: float = GRAPHENE_A, energy: float = ENERGY) -> float:
    """First-order {10-10} graphene reflection: d = a*sqrt(3)/2, angle = lambda/d (small-angle)."""
    wavelength = energy2wavelength(energy)  # Å
    return float(wavelength / (a * np.sqrt(3) / 2) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["a", "b"], default=None)
    args = parser.parse_args()
    x0, y0 = 4.5, 5.0
    atoms = graphene_si(si_targets=[(x0 + 4.0, y0 + 4.5), (x0 + 12.0, y0 + 6.0), (x0 + 7.0, y0 + 12.0)],
                        vacancy_targets=[(x0 + 12.5, y0 + 12.5)])
    if args.only in (None, "a"):
        a = simulate("graphene_si", atoms, semiangle=30.0, scan_start=(x0, y0), scan_step=0.5, scan_n=32,
                     max_angle=40.0, annular={"abtem_bf_0_25mrad": (0.0, 25.0),
                                              "abtem_abf_15_25mrad": (15.0, 25.0),
                                              "abtem_adf_33_39mrad": (33.0, 39.0)}, seed=1)
        _report(a)
        np.savez_compressed(HERE / "graphene_si.npz", **a)
    if args.only in (None, "b"):
        # +-36 mrad holds the first-order discs (22.8 + 10 mrad) with a margin; second order (39.6) is off it
        b = simulate("graphene_10mrad", atoms, semiangle=10.0, scan_start=(x0, y0), scan_step=0.75, scan_n=24,
                     max_angle=36.0, annular={"abtem_bf_0_8mrad": (0.0, 8.0),
                                              "abtem_adf_13_35mrad": (13.0, 35.0)}, seed=2)
        b["bragg_distance_mrad"] = bragg_distance_mrad()
        _report(b)
        np.savez_compressed(HERE / "graphene_10mrad.npz", **b)


def _report(d: dict) -> None:
    com = d["abtem_com_mrad"]
    mag = np.hypot(com[..., 0], com[..., 1])
    top = np.argwhere(mag >= np.quantile(mag, 0.99))
    dist = np.min(np.linalg.norm(top[:, None, :] - d["si_positions_px"][None], axis=-1), axis=1) * d["nm_per_px"] * 10
    print(f"  data {d['data'].shape}, mrad/px {d['mrad_per_px']:.4f}, ref CoM {d['abtem_reference_com_mrad']}, "
          f"max|CoM| {mag.max():.3f} mrad, top-1% distance to nearest Si (Å): {np.round(dist, 2)}")


if __name__ == "__main__":
    main()
