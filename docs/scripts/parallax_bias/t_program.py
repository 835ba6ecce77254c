# reproduce ptytile calibrate's defocus with the numpy re-implementation
import numpy as np, plx
I = np.load('I.npy', mmap_mode='r')
mean = plx.mean_pattern(I); c, r = plx.fit_disk(mean)
print('disk centre', c, 'radius px', r, 'alpha mrad', r * plx.DTH * 1e3)
cents = plx.detectors(r)
imgs, cen = plx.virtual_images(np.asarray(I), c, cents, plx.VR * r)
np.save('vimgs_prog.npy', imgs)
ang = cents * plx.DTH
rows = plx.run_rings(imgs, ang)
print('defocus (all rings) %.2f Å' % plx.defocus_of(rows))
for k in range(4): print(' ring %.2f r: %.2f Å' % (plx.RINGS[k], plx.defocus_of(rows[8 * k:8 * k + 8])))
print('M (Å/rad):', plx.fit_matrix(rows))
# with the pixel-set centroids as angles
print('defocus, angles = pixel-set centroids: %.2f' % plx.defocus_of([(d, cc * plx.DTH) for (d, _), cc in zip(rows, cen[1:])]))
