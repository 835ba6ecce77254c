# ring method (ptytile's 33 detectors, periodic-CC registration and NCC) with the virtual-detector radius varied
import numpy as np, plx, sys
for fn in sys.argv[1:]:
    I = np.asarray(np.load(fn, mmap_mode='r'))
    c, r = plx.fit_disk(plx.mean_pattern(I)); cents = plx.detectors(r); ang = cents * plx.DTH
    out = []
    for vr in (0.2, 0.1, 0.05):
        imgs, cen = plx.virtual_images(I, c, cents, vr * r)
        rows = plx.run_rings(imgs, ang)
        rows_f = plx.run_rings(imgs, ang, shift_fn=lambda a, b, p, R: plx.periodic_shift(a, b, p, radius=R))
        out.append('VR %.2f (%d px): NCC %.1f [%s] periodic %.1f' % (vr, (np.hypot(*np.mgrid[-20:21, -20:21]) <= max(vr * r, 1)).sum(), plx.defocus_of(rows),
                   ' '.join('%.1f' % plx.defocus_of(rows[8*k:8*k+8]) for k in range(4)), plx.defocus_of(rows_f)))
    print(fn, '\n  ' + '\n  '.join(out), flush=True)
