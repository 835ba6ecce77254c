# (c) double-sideband-only parallax: images low-passed to lam|g| <= QMAX so that for every used pixel
# (|theta| <= RHO alpha, RHO + QMAX/alpha <= 1) both partner beams k +- g lie inside the aperture;
# per-pixel registration (periodic CC) against the central 0.2 r detector, also low-passed.
import numpy as np, plx, sys
import os
QMAX = float(os.environ.get("QMAX", "7.5e-3")); ALPHA = float(os.environ.get("ALPHA", "22e-3"))
for fn in sys.argv[1:]:
    I = np.asarray(np.load(fn, mmap_mode='r'))
    c, r = plx.fit_disk(plx.mean_pattern(I))
    m = 128; ky, kx = np.mgrid[0:m, 0:m]; q = np.stack([ky - c[0], kx - c[1]], -1).reshape(-1, 2)
    rho = np.hypot(*q.T) * plx.DTH / ALPHA
    ref, _ = plx.virtual_images(I, c, [[0, 0]], plx.VR * r)
    res = []
    for RHO, qm in ((0.65, QMAX), (0.5, QMAX), (0.65, 11e-3), (0.9, QMAX), (0.98, QMAX), (0.98, 1.0)):
        sel = np.where((rho <= RHO) & (rho > 0.25))[0]
        pim = I.reshape(len(I), -1)[:, sel].T.reshape(len(sel), 58, 58).astype(np.float64)
        th = q[sel] * plx.DTH
        d = plx.pshift_many(plx.lowpass(pim, qm), plx.lowpass(ref[0], qm), th * float(os.environ.get("PRED", "145")) / plx.STEP) * plx.STEP
        res.append('0.25<rho<=%.2f, lam|g|<=%.1f mrad: %.1f' % (RHO, qm * 1e3, (d * th).sum() / (th ** 2).sum()))
    print(fn + '\n  ' + '\n  '.join(res), flush=True)
