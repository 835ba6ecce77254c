# (b) per-pixel parallax: every BF pixel's image registered (periodic CC, exact sub-pixel) to the
#     central virtual detector's image; effective defocus vs |theta|/alpha; fits over inner pixels only
import numpy as np, plx, sys
fn = sys.argv[1] if len(sys.argv) > 1 else 'I.npy'
I = np.load(fn, mmap_mode='r')
c, r = plx.fit_disk(plx.mean_pattern(I)) if len(sys.argv) < 3 else (np.array([64., 64.]), float(sys.argv[2]))
alpha_px = 22e-3 / plx.DTH
m = I.shape[-1]; ky, kx = np.mgrid[0:m, 0:m]
q = np.stack([ky - c[0], kx - c[1]], -1).reshape(-1, 2)
sel = np.where(np.hypot(q[:, 0], q[:, 1]) <= 0.98 * alpha_px)[0]
Ia = np.asarray(I).reshape(len(I), -1)
imgs = Ia[:, sel].T.reshape(len(sel), 58, 58).astype(np.float64)
ref, _ = plx.virtual_images(I, c, [[0, 0]], plx.VR * r)
theta = q[sel] * plx.DTH
preds = theta * 145 / plx.STEP
d = plx.pshift_many(imgs, ref[0], preds)
np.savez('pixels_%s.npz' % fn.split('/')[-1].split('.')[0], d=d, theta=theta)
rho = np.hypot(*theta.T) / 22e-3
D = d * plx.STEP
def fdf(mask): return (D[mask] * theta[mask]).sum() / (theta[mask] ** 2).sum()
print(fn)
for lo, hi in [(0.1, .2), (.2, .3), (.3, .4), (.4, .5), (.5, .6), (.6, .7), (.7, .8), (.8, .9), (.9, .98)]:
    mk = (rho >= lo) & (rho < hi)
    print(' |theta|/alpha %.2f-%.2f: n %4d  defocus %.1f Å' % (lo, hi, mk.sum(), fdf(mk)))
for cut in [0.3, 0.5, 0.7, 0.9, 0.98]:
    mk = (rho < cut) & (rho > 0.05)
    M = np.linalg.lstsq(theta[mk], D[mk], rcond=None)[0].T
    print(' pixels |theta| < %.2f alpha: defocus %.1f Å  (M diag %.1f %.1f offdiag %.2f %.2f)' % (cut, fdf(mk), M[0, 0], M[1, 1], M[0, 1], M[1, 0]))
