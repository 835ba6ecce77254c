# parallax defocus of one [3364,128,128] intensity file: ptytile's ring method (NCC+parabola),
# the same detectors with exact periodic registration, and per-pixel registration by |theta|
import numpy as np, plx, sys
fn = sys.argv[1]
I = np.asarray(np.load(fn, mmap_mode='r'))
c, r = plx.fit_disk(plx.mean_pattern(I))
cents = plx.detectors(r); ang = cents * plx.DTH
imgs, _ = plx.virtual_images(I, c, cents, plx.VR * r)
rows = plx.run_rings(imgs, ang)
rows_f = plx.run_rings(imgs, ang, shift_fn=lambda a, b, p, R: plx.periodic_shift(a, b, p, radius=R))
ring = lambda rw: ' '.join('%.1f' % plx.defocus_of(rw[8*k:8*k+8]) for k in range(4))
print('%s: disk r %.2f px; ptytile rings: %.2f Å (rings %s); periodic-CC rings: %.2f (rings %s)' % (fn.split('/')[-1], r, plx.defocus_of(rows), ring(rows), plx.defocus_of(rows_f), ring(rows_f)))
# per pixel (every 1 px), reference = central detector
m = 128; ky, kx = np.mgrid[0:m, 0:m]; q = np.stack([ky - c[0], kx - c[1]], -1).reshape(-1, 2)
rho = np.hypot(*q.T) * plx.DTH / 22e-3
sel = np.where(rho <= 0.98)[0]
pim = I.reshape(len(I), -1)[:, sel].T.reshape(len(sel), 58, 58).astype(np.float64)
th = q[sel] * plx.DTH
d = plx.pshift_many(pim, imgs[0], th * 145 / plx.STEP) * plx.STEP
rh = rho[sel]
fd = lambda mk: (d[mk] * th[mk]).sum() / (th[mk] ** 2).sum()
print('  per pixel, by |theta|/alpha: ' + ' '.join('%.1f-%.1f:%.1f' % (lo, lo + .1, fd((rh >= lo) & (rh < lo + .1))) for lo in np.arange(0.2, 0.95, 0.1)))
print('  per pixel fits: ' + ', '.join('<%.2f a: %.1f' % (cu, fd((rh < cu) & (rh > 0.25))) for cu in (0.5, 0.7, 0.98)) + ' (pixels > 0.25 a, outside the reference detector)')
