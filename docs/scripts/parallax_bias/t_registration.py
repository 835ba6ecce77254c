# (a) registration: ptytile NCC+parabola vs exact periodic (band-limited) cross-correlation maximum,
#     and upsampled parabola-free variants; same detectors, same reference (central detector)
import numpy as np, plx
imgs = np.load('vimgs_prog.npy')
I = np.load('I.npy', mmap_mode='r')
c, r = plx.fit_disk(plx.mean_pattern(I)); cents = plx.detectors(r); ang = cents * plx.DTH
rows_p = plx.run_rings(imgs, ang)
rows_f = plx.run_rings(imgs, ang, shift_fn=lambda a, b, p, R: plx.periodic_shift(a, b, p, radius=R))
def rep(name, rows):
    print('%-40s all %.2f | rings %s' % (name, plx.defocus_of(rows), ' '.join('%.2f' % plx.defocus_of(rows[8*k:8*k+8]) for k in range(4))))
rep('ptytile NCC overlap + parabola', rows_p)
rep('periodic CC, continuous max', rows_f)
dd = np.array([a[0] - b[0] for a, b in zip(rows_p, rows_f)])
print('NCC - periodic shift differences (steps): rms %.3f, max %.3f' % (np.sqrt((dd**2).mean()), np.abs(dd).max()))
# expected shifts at 150 Å
exp = np.array([t for _, t in rows_f]) * 150 / plx.STEP
got = np.array([d for d, _ in rows_f])
for k in range(4):
    s = slice(8*k, 8*k+8)
    print(' ring %.2f: expected |d| %.3f steps, measured radial component %.3f, tangential rms %.3f' % (plx.RINGS[k], np.linalg.norm(exp[s], axis=1).mean(),
          (np.sum(got[s]*exp[s], 1)/np.linalg.norm(exp[s], axis=1)).mean(), np.sqrt(((got[s][:,0]*exp[s][:,1]-got[s][:,1]*exp[s][:,0])/np.linalg.norm(exp[s],axis=1))**2).mean()))
