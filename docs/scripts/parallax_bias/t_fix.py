# a fix within ptytile's scheme: the same 33 virtual detectors (radius 0.2 r), each ring's images (and the
# reference) low-passed to lam|g| <= min(7.5 mrad, (1 - rho - 0.2) alpha) so that every pixel of the detector
# sees both partner beams; ring 0.7 dropped or kept; NCC + parabola as ptytile (and the periodic CC)
import numpy as np, plx, sys
for fn in sys.argv[1:]:
    I = np.asarray(np.load(fn, mmap_mode='r'))
    c, r = plx.fit_disk(plx.mean_pattern(I)); cents = plx.detectors(r); ang = cents * plx.DTH; alpha = r * plx.DTH
    imgs, _ = plx.virtual_images(I, c, cents, plx.VR * r)
    out = []
    for nr in (3, 4):
        for reg in ('ncc', 'periodic'):
            rows = []; M = np.zeros((2, 2))
            for ri in range(nr):
                qm = min(7.5e-3, max(1.5e-3, (1 - plx.RINGS[ri] - plx.VR) * alpha))
                ref = plx.lowpass(imgs[0], qm)
                for k in range(8):
                    i = 1 + 8 * ri + k; t = ang[i]; pred = M @ t / plx.STEP if ri else t * 140 / plx.STEP
                    a = plx.lowpass(imgs[i], qm)
                    d = plx.ncc_shift(a, ref, pred, 2) if reg == 'ncc' else plx.periodic_shift(a, ref, pred, radius=2)
                    rows.append((d, t))
                M = plx.fit_matrix(rows)
            out.append('rings %d, %s: %.1f [%s]' % (nr, reg, plx.defocus_of(rows), ' '.join('%.1f' % plx.defocus_of(rows[8*k:8*k+8]) for k in range(nr))))
    print(fn + '\n  ' + '\n  '.join(out), flush=True)
