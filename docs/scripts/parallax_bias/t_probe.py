# (e)/(c) check of the stored probe's aberration function: fit chi(theta) = pi/lam*(C10 th^2 + C30 th^4/2) to /probe/probe_fourier
import h5py, numpy as np, plx
import os
THIN = os.environ.get('THIN', '../shared/datasets/pbtio3_thin.h5')  # the shipped file
f = h5py.File(THIN, 'r')
P = f['/probe/probe_fourier'][:]; Pr = f['/probe/probe_real'][:]
m = 128; ky, kx = np.mgrid[0:m, 0:m] - 64
th = np.hypot(ky, kx) * plx.DTH
A = np.abs(P); ok = A > 0.5 * A.max()
ph = np.angle(P * np.conj(P[64, 64]))
# unwrap by fitting on radius: sort
sel = ok & (th < 0.021)
chi = -np.unwrap(ph[sel][np.argsort(th[sel])])   # P = A exp(-i chi)
t = np.sort(th[sel])
X = np.stack([np.pi / plx.LAM * t**2, np.pi / plx.LAM * t**4 / 2], 1)
c, *_ = np.linalg.lstsq(X, chi, rcond=None)
print('stored probe_fourier: C10 = %.2f Å, C30 = %.0f Å  (fit inside 21 mrad)' % tuple(c))
c1, *_ = np.linalg.lstsq(X[:, :1], chi, rcond=None); print('C10-only fit: %.2f Å, rms resid %.3f rad' % (c1[0], np.std(chi - X[:, :1] @ c1)))
# consistency: FFT of probe_real vs probe_fourier
Q = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(Pr), norm='ortho'))
print('|<fft(probe_real), probe_fourier>| / norms = %.4f' % (abs(np.vdot(Q, P)) / np.linalg.norm(Q) / np.linalg.norm(P)))
Q0 = np.angle(Q*np.conj(Q[64,64]))[sel][np.argsort(th[sel])]; chiq = -np.unwrap(Q0)
cq, *_ = np.linalg.lstsq(X, chiq, rcond=None); print('probe_real FFT: C10 = %.2f, C30 = %.0f' % tuple(cq))
