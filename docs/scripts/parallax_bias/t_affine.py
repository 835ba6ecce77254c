# affine scan error: positions_given = c + A (p_true - c), A = 1.02 R(1 deg) (R = [[cos, sin], [-sin, cos]] on (y, x)).
# Shifts are measured in scan-index units (independent of the positions); the grid map G (Å per index step,
# 2x2) is fitted to the given positions; d = G du; least squares d = M theta; A_est = M / defocus_ref.
import numpy as np, plx, h5py, sys, os
import os
THIN = os.environ.get('THIN', '../shared/datasets/pbtio3_thin.h5')  # the shipped file
fn = sys.argv[1] if len(sys.argv) > 1 else 'I.npy'
f = h5py.File(THIN, 'r'); p = f['/data/positions_A'][:]
ph = np.radians(1.0); R = np.array([[np.cos(ph), np.sin(ph)], [-np.sin(ph), np.cos(ph)]]); A = 1.02 * R
c0 = p.mean(0); pg = c0 + (p - c0) @ A.T
iy, ix = np.divmod(np.arange(len(p)), 58)
def gridmap(P):
    X = np.stack([np.ones(len(P)), iy, ix], 1); B, *_ = np.linalg.lstsq(X, P, rcond=None); return B[1:].T   # P ~ b0 + G (iy, ix)
def decompose(Mat):
    sc = np.sqrt(np.linalg.det(Mat)); rot = np.degrees(np.arctan2(Mat[0, 1] - Mat[1, 0], Mat[0, 0] + Mat[1, 1]))
    S = np.array([[np.cos(np.radians(rot)), -np.sin(np.radians(rot))], [np.sin(np.radians(rot)), np.cos(np.radians(rot))]]) @ Mat   # R^T M: symmetric-ish
    S = (S + S.T) / 2 / sc; ev = np.linalg.eigvalsh(S)
    return sc, rot, ev[1] - ev[0]
def fitM(du, th, G):
    D = du @ G.T; X, res, *_ = np.linalg.lstsq(th, D, rcond=None); M = X.T
    r = D - th @ X; s2 = (r ** 2).sum() / (2 * len(th) - 4); cov = s2 * np.linalg.inv(th.T @ th)
    return M, np.sqrt(np.diag(cov))   # std of each row's entries (same for both rows)
I = np.asarray(np.load(fn, mmap_mode='r'))
c, r = plx.fit_disk(plx.mean_pattern(I)); cents = plx.detectors(r); ang = cents * plx.DTH
imgs, _ = plx.virtual_images(I, c, cents, plx.VR * r)
rows = plx.run_rings(imgs, ang)
du_p = np.array([d for d, _ in rows]); th_p = np.array([t for _, t in rows])
# double-sideband per-pixel variant (see t_lowpass.py)
m = 128; ky, kx = np.mgrid[0:m, 0:m]; q = np.stack([ky - c[0], kx - c[1]], -1).reshape(-1, 2)
rho = np.hypot(*q.T) * plx.DTH / 22e-3; sel = np.where((rho <= 0.65) & (rho > 0.25))[0]
pim = I.reshape(len(I), -1)[:, sel].T.reshape(len(sel), 58, 58).astype(np.float64); th_d = q[sel] * plx.DTH
du_d = plx.pshift_many(plx.lowpass(pim, 7.5e-3), plx.lowpass(imgs[0], 7.5e-3), th_d * 145 / plx.STEP)
Gt, Gg = gridmap(p), gridmap(pg)
print('grid map true\n', Gt, '\ngrid map given (= A·s)\n', Gg, '\nA (truth): scale 1.02, rotation +1.000 deg')
for name, du, th, dref in (('ptytile rings (NCC)', du_p, th_p, [150.0, 139.55, 'sim']), ('double-sideband pixels', du_d, th_d, [150.0, 146.5, 'sim'])):
    M0, e0 = fitM(du, th, Gt); Mg, eg = fitM(du, th, Gg)
    print('\n== %s: M on true positions (Å/rad)\n%s  (std of entries %s)' % (name, np.round(M0, 2), np.round(e0, 2)))
    s0, r0, an0 = decompose(M0 / 150.0)
    print('  true positions: M/150 -> scale %.4f rot %+.3f deg aniso %.4f' % (s0, r0, an0))
    print('  given positions M:\n%s' % np.round(Mg, 2))
    for lab, dfv in (('known 150 Å (no bias removal)', 150.0), ('effective defocus from the multislice sim (%.2f Å)' % dref[1], dref[1]),
                     ('self-calibrated on the true positions (%.2f Å)' % (np.trace(M0) / 2), np.trace(M0) / 2)):
        sc, rot, an = decompose(Mg / dfv)
        print('  A_est = M / %-55s scale %.4f (err %+.2f %%), rotation %+.3f deg (err %+.3f), anisotropy %.4f' % (lab, sc, (sc / 1.02 - 1) * 100, rot, rot - 1, an))
    # statistical errors: rotation from off-diagonal std
    print('  statistical 1-sigma of M entries / defocus: %.4f -> scale ~%.2f %%, rotation ~%.3f deg' % (eg.max() / 146, eg.max() / 146 / np.sqrt(2) * 100, np.degrees(eg.max() / 146 / np.sqrt(2))))
