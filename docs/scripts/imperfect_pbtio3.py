"""Issue 14, Must show 5 (docs/algorithms.md, "The default engine on imperfect data"): make
imperfect versions of pbtio3_thin.h5 (dose 1e5) for the engine comparison.

    python3 imperfect_pbtio3.py KIND [DIR]     # DIR/KIND.h5 + DIR/KIND.toml (DIR default .)

KIND:
  positions  the positions given to ptytile carry 0.3 A RMS random errors (Gaussian, each
             axis 0.3/sqrt(2) A); the patterns stay as measured. The true positions are kept
             as /data/positions_true_A.
  dropped    2 % of the frames (67, random) and a 10 x 10 block of the scan set to zero, and
             1 % (34) saturated: every pixel of the frame clipped at 3 counts (a truncated
             read-out). The default outlier rule is left on.
  coherence  partial spatial coherence: every pattern becomes the mixture
             I'(q) = sum_s w_s I(q - q_s) over the 3 x 3 tilts q_s in {-1, 0, 1}^2 px
             (0.84 mrad), w = 0.4 centre, 0.1 edge, 0.05 corner. For a thin object a tilt
             k_s multiplies the exit wave by exp(2 pi i k_s.r), i.e. shifts the far field, so
             this is exactly a mixed state of 9 probe modes P(r) exp(2 pi i k_s.r) with
             powers w_s. The mixture of Poisson counts is not Poisson (its variance is lower).
  background added background: every pixel gains Poisson(0.05) counts (about 820 counts per
             pattern, 5 % of the signal), a detector/inelastic pedestal the model does not know.
  all        all four at once (in the order above).

The experiment keys are those of datasets/pbtio3_thin.toml; compare results with
../shared/datasets/pbtio3_thin.h5 (its ground truth). Needs numpy and h5py.
"""
import os
import sys

import h5py
import numpy as np

THIN = os.path.join(os.path.dirname(__file__), "../../../shared/datasets/pbtio3_thin.h5")
KINDS = ["positions", "dropped", "coherence", "background"]

TOML = """# Imperfect pbtio3_thin.h5 ({kind}): docs/scripts/imperfect_pbtio3.py
[data]
file = "{kind}.h5"
intensities = "/data/intensities_poisson_dose1e05"
positions = "/data/positions_A"
positions_unit = "angstrom"
zero_frequency = "center"

[experiment]
beam = "electron"
energy_ev = 300e3
convergence_semiangle_mrad = 22.0
defocus_m = 150e-10
angular_sampling_mrad = 0.84134568

[reconstruction]
iterations = 20
noise_model = "poisson"
probe_modes = 1
update_probe = true

[output]
path = "{kind}-recon.h5"

[parallel]
ranks = 4
"""


def positions(I, pos, rng):
    return I, pos + rng.normal(0.0, 0.3 / np.sqrt(2.0), pos.shape)


def dropped(I, pos, rng):
    n = I.shape[0]
    zero = rng.choice(n, 67, replace=False)
    I[zero] = 0.0
    block = [r * 58 + c for r in range(20, 30) for c in range(30, 40)]
    I[block] = 0.0
    rest = np.setdiff1d(np.arange(n), np.concatenate([zero, block]))
    sat = rng.choice(rest, 34, replace=False)
    I[sat] = np.minimum(I[sat], 3.0)
    return I, pos


def coherence(I, pos, rng):
    w = {0: 0.4, 1: 0.1, 2: 0.05}
    out = np.zeros_like(I)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out += w[abs(dy) + abs(dx)] * np.roll(I, (dy, dx), axis=(1, 2))
    return out, pos


def background(I, pos, rng):
    return I + rng.poisson(0.05, I.shape).astype(I.dtype), pos


def make(kind, outdir):
    f = h5py.File(THIN, "r")
    I = f["/data/intensities_poisson_dose1e05"][:]
    pos = f["/data/positions_A"][:]
    true = pos.copy()
    rng = np.random.default_rng(14)
    for k in KINDS if kind == "all" else [kind]:
        I, pos = globals()[k](I, pos, rng)
    with h5py.File(os.path.join(outdir, kind + ".h5"), "w") as g:
        g["/data/intensities_poisson_dose1e05"] = I.astype(np.float32)
        g["/data/positions_A"] = pos
        g["/data/positions_true_A"] = true
    with open(os.path.join(outdir, kind + ".toml"), "w") as t:
        t.write(TOML.format(kind=kind))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in KINDS + ["all"]:
        sys.exit(__doc__)
    make(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else ".")
