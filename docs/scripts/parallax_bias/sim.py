"""noise-free 4D-STEM simulations on the pbtio3_thin.h5 geometry (58x58 scan, 128x128 detector,
0.8413 mrad/px, 300 kV, 22 mrad, C10 = -150 Å), saved as [3364,128,128] float32 .npy.
  python3 sim.py single  OUT.npy [PHASE_SCALE]   single slice, T = exp(i*s*angle(transmission_recon))
  python3 sim.py random  OUT.npy [PHASE_RMS]     single slice, smooth random phase object (no crystal)
  python3 sim.py multi   OUT.npy [N] [C10]       multislice through /ground_truth/slice_potentials_sim
                                                 (8 x 1.0375 Å) on an N x N grid (384 = abTEM's; 192 Fourier-cropped)
Conventions of the file's README: pattern = fftshift|FFT2(P(r - r_j) T(r))|^2 (ortho), P = IFFT(A exp(-i chi)),
chi = pi*lam*C10*k^2; Fresnel propagation over dz: exp(-i pi lam dz k^2)."""
import sys, numpy as np, h5py
import os
THIN = os.environ.get('THIN', '../shared/datasets/pbtio3_thin.h5')  # the shipped file
F = THIN
f = h5py.File(F, 'r')
LAM = f['/meta'].attrs['wavelength_A']; SIG = f['/meta'].attrs['interaction_constant_sigma_rad_per_VA']
pos = f['/data/positions_A'][:]                 # (y, x) Å
mode, out = sys.argv[1], sys.argv[2]
L = 23.4                                         # window = supercell (Å)

def probe_hat(n, c10=-150.0, alpha=22e-3):
    k = np.fft.fftfreq(n, d=L / n)               # Å^-1
    K2 = k[:, None] ** 2 + k[None, :] ** 2
    A = (np.sqrt(K2) * LAM <= alpha).astype(float)
    return A * np.exp(-1j * np.pi * LAM * c10 * K2), K2, k

def patterns_single(T, c10=-150.0):
    n = T.shape[0]; Ph, K2, k = probe_hat(n, c10)
    out = np.empty((len(pos), 128, 128), np.float32)
    for j, (y, x) in enumerate(pos):
        Pj = np.fft.ifft2(Ph * np.exp(-2j * np.pi * (k[:, None] * y + k[None, :] * x)))
        W = np.fft.fft2(Pj * T)
        I = np.abs(W) ** 2
        out[j] = np.fft.fftshift(crop(I, n))
    return out

def crop(I, n):
    """central 128x128 of the (unshifted) far field of an n-grid (k sampling 1/L in both)."""
    if n == 128: return I
    idx = np.r_[0:64, n - 64:n]
    return I[np.ix_(idx, idx)]

if mode == 'single':
    s = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    T = f['/ground_truth/transmission_recon'][:].astype(np.complex128)
    I = patterns_single(np.exp(1j * s * np.angle(T)))
elif mode == 'random':
    rms = float(sys.argv[3]) if len(sys.argv) > 3 else 0.3
    rng = np.random.default_rng(1); n = 128
    k = np.fft.fftfreq(n, d=L / n); K = np.hypot(k[:, None], k[None, :])
    ph = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * np.exp(-(K / 0.8) ** 2)))
    ph *= rms / ph.std()
    I = patterns_single(np.exp(1j * ph))
elif mode == 'multi':
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 384
    c10 = float(sys.argv[4]) if len(sys.argv) > 4 else -150.0
    V = f['/ground_truth/slice_potentials_sim'][:].astype(np.float64)      # (8, 384, 384) V·Å
    dz = f['/meta'].attrs['slice_thickness_A']
    k384 = np.fft.fftfreq(384, d=L / 384)
    if n != 384:                                  # Fourier crop of each slice's potential
        idx = np.r_[0:n // 2, 384 - n // 2:384]
        V = np.real(np.fft.ifft2(np.fft.fft2(V)[:, idx][:, :, idx])) * (n / 384) ** 2
    Ph, K2, k = probe_hat(n, c10)
    bl = (np.sqrt(K2) <= (n / L) / 2 * 2 / 3)    # 2/3 antialias band limit
    T = np.exp(1j * SIG * V)
    T = np.fft.ifft2(np.fft.fft2(T) * bl)        # band-limited transmission functions
    prop = np.exp(-1j * np.pi * LAM * dz * K2) * bl
    I = np.empty((len(pos), 128, 128), np.float32)
    for j, (y, x) in enumerate(pos):
        w = np.fft.ifft2(Ph * np.exp(-2j * np.pi * (k[:, None] * y + k[None, :] * x)))
        for s_ in range(len(V)):
            w = np.fft.ifft2(np.fft.fft2(w * T[s_]) * prop)
        I[j] = np.fft.fftshift(crop(np.abs(np.fft.fft2(w)) ** 2, n))
        if j % 500 == 0: print(j, flush=True)
I *= 16300.0 / I[0].sum()
np.save(out, I)
# agreement with the file's patterns (first few)
D = f['/data/intensities_poisson_dose1e05']
cs = [np.corrcoef(I[j].ravel(), D[j].ravel())[0, 1] for j in (0, 840, 1681, 2522)]
print(mode, sys.argv[3:], 'corr with dose-1e5 data patterns:', np.round(cs, 4))
