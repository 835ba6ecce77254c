"""Issue 19, Must show 1 (docs/algorithms.md, "Calibration from the data"): make
pbtio3_thin.h5 into a raw 4D-STEM file whose patterns are turned (and transposed), and turn
a ptytile result back for `ptytile compare`.

    python3 turned_pbtio3.py make PHI TRANSPOSE(0|1) NAME     # NAME.h5 + NAME.toml here
    python3 turned_pbtio3.py back RESULT.h5 OUT.h5 PHI        # object and positions turned back

`make`: I'(q) = I(B q), q = (y, x) from the zero frequency [64, 64], B = T R(phi) (transposed)
or R(phi), R(phi) = [[cos, sin], [-sin, cos]] on (y, x); bilinear, 0 outside. Only the
energy and the angular sampling go into /meta. Read with data.detector_transpose = TRANSPOSE
the scan rotation is theta = phi (transposed) or -phi.
`back`: out(r) = obj(c + R(phi)(r - c)) by a band-limited three-shear rotation (Fourier
shifts, the object padded with 1), positions p -> c + R(phi)^T (p - c).
Needs numpy and h5py.
"""
import sys
import h5py
import numpy as np

THIN = "../shared/datasets/pbtio3_thin.h5"


def make(phi, transpose, name, thin=THIN):
    f = h5py.File(thin, "r")
    I = f["/data/intensities_poisson_dose1e05"][:].reshape(58, 58, 128, 128).astype(np.float64)
    m = 128
    c, s = np.cos(np.radians(phi)), np.sin(np.radians(phi))
    R = np.array([[c, s], [-s, c]])
    B = np.array([[0, 1], [1, 0]]) @ R if transpose else R
    yy, xx = np.mgrid[0:m, 0:m] - 64.0
    sy, sx = np.einsum("ij,jyx->iyx", B, np.stack([yy, xx])) + 64
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    fy, fx = sy - y0, sx - x0
    out = np.zeros_like(I)
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
        yi, xi = y0 + dy, x0 + dx
        ok = (yi >= 0) & (yi < m) & (xi >= 0) & (xi < m)
        out += np.where(ok, I[:, :, np.clip(yi, 0, m - 1), np.clip(xi, 0, m - 1)], 0) * np.where(ok, w, 0)
    with h5py.File(name + ".h5", "w") as g:
        g.create_dataset("/scan/data", data=out.astype(np.float32))
        g.create_group("meta")
        g["meta"].attrs["energy_eV"] = 300e3
        g["meta"].attrs["angular_sampling_mrad"] = 0.84134568
    with open(name + ".toml", "w") as t:
        t.write('[data]\nfile = "%s.h5"\nintensities = "/scan/data"\nscan_step_angstrom = 0.40344828\n'
                '[output]\npath = "%s_out/recon.h5"\n' % (name, name))


def back(src, dst, phi):
    import shutil
    shutil.copy(src, dst)
    f = h5py.File(dst, "r+")
    O, P = f["object"][()], f["positions_px"][()]
    obj = O if O.ndim == 2 else O[0]
    n0, n1 = obj.shape
    N = 2 * max(n0, n1)
    big = np.ones((N, N), complex)
    o0, o1 = (N - n0) // 2, (N - n1) // 2
    big[o0:o0 + n0, o1:o1 + n1] = obj
    c = N // 2
    t = np.radians(phi)

    def shear(a, k, axis):  # shift each line along `axis` by k (other coordinate - c)
        f_ = np.fft.fftfreq(N)
        other = np.arange(N) - c
        ph = np.exp(-2j * np.pi * (f_[None, :] * k * other[:, None] if axis == 1 else f_[:, None] * k * other[None, :]))
        return np.fft.ifft(np.fft.fft(a, axis=axis) * ph, axis=axis)

    def turn(a, sgn):
        k1, k2 = sgn * np.tan(t / 2), -sgn * np.sin(t)
        return shear(shear(shear(a, k1, 1), k2, 0), k1, 1)

    R = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    # the shear signs that give out(r) = in(c + R (r - c)), checked on a point
    delta = np.zeros((N, N))
    delta[c + 20, c] = 1
    want = R.T @ np.array([20.0, 0.0])
    errs = []
    for sgn in (1, -1):
        yy, xx = np.unravel_index(np.argmax(np.abs(turn(delta, sgn))), (N, N))
        errs.append((np.hypot(yy - c - want[0], xx - c - want[1]), sgn))
    out = turn(big, min(errs)[1])[o0:o0 + n0, o1:o1 + n1].astype(obj.dtype)
    if O.ndim == 2:
        f["object"][...] = out
    else:
        O[0] = out
        f["object"][...] = O
    cen = np.array([c - o0, c - o1], float)
    f["positions_px"][...] = cen + (P - cen) @ R
    f.close()


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(float(sys.argv[2]), sys.argv[3] == "1", sys.argv[4])
    else:
        back(sys.argv[2], sys.argv[3], float(sys.argv[4]))
