"""numpy re-implementation of ptytile's bright-field parallax (src/data/calibrate.rs) + variants."""
import numpy as np
RINGS = [0.12, 0.25, 0.5, 0.7]; PER_RING = 8; VR = 0.2
DTH = 0.84134568e-3          # rad/px
STEP = 0.40344828            # Å
LAM = 0.01968748889772767    # Å

def fit_disk(mean):
    m = mean.shape[0]; mx = mean.max()
    hi = mean[mean > 0.5 * mx]; lo = np.sort(mean[mean <= 0.5 * mx])
    bf = hi.mean(); dark = max(lo[len(lo) // 2], 0)
    w = np.clip((mean - dark) / (bf - dark), 0, 1)
    ky, kx = np.mgrid[0:m, 0:m]
    A = w.sum(); return np.array([(w * ky).sum() / A, (w * kx).sum() / A]), np.sqrt(A / np.pi)

def mean_pattern(I):
    n = len(I); k = min(n, 256)
    return np.mean([I[i * n // k].astype(np.float64) for i in range(k)], axis=0)

def detectors(r):
    """ptytile's 33 virtual detector centres (px, (y,x)) relative to the disk centre"""
    a = [[0.0, 0.0]]
    for i, rho in enumerate(RINGS):
        for k in range(PER_RING):
            t = 2 * np.pi * (k + 0.5 * (i % 2)) / PER_RING
            a.append([rho * r * np.sin(t), rho * r * np.cos(t)])
    return np.array(a)

def virtual_images(I, centre, cents, rad, scan=(58, 58)):
    """images of discs of radius rad (px) at centre+cents; returns [n_det, Sy, Sx] and the pixel-set centroids"""
    m = I.shape[-1]; ky, kx = np.mgrid[0:m, 0:m]
    masks = []; cen = []
    for q in cents:
        mk = (ky - centre[0] - q[0]) ** 2 + (kx - centre[1] - q[1]) ** 2 <= max(rad, 1.0) ** 2
        masks.append(mk.ravel()); cen.append([ky[mk].mean() - centre[0], kx[mk].mean() - centre[1]])
    Mk = np.array(masks, dtype=np.float32)            # [nd, m*m]
    imgs = I.reshape(len(I), -1) @ Mk.T                # [n, nd]
    return imgs.T.reshape(len(cents), *scan).astype(np.float64), np.array(cen)

def ncc_shift(a, b, around, radius):
    """ptytile ncc_shift: d maximising Pearson corr of a(u+d) with b(u) over overlap, parabola sub-pixel"""
    sy, sx = a.shape; c0 = np.round(around).astype(int); w = 2 * radius + 1
    cc = np.full((w, w), -np.inf)
    for i in range(w):
        for k in range(w):
            dy, dx = c0[0] + i - radius, c0[1] + k - radius
            y0, y1 = max(0, -dy), min(sy, sy - dy); x0, x1 = max(0, -dx), min(sx, sx - dx)
            if (y1 - y0) * (x1 - x0) * 4 < sy * sx: continue
            va = a[y0 + dy:y1 + dy, x0 + dx:x1 + dx].ravel(); vb = b[y0:y1, x0:x1].ravel()
            va = va - va.mean(); vb = vb - vb.mean()
            den = np.sqrt((va * va).sum() * (vb * vb).sum())
            if den > 0: cc[i, k] = (va * vb).sum() / den
    i, k = np.unravel_index(np.argmax(cc), cc.shape)
    def at(i, k): return cc[i, k] if 0 <= i < w and 0 <= k < w else -np.inf
    def vert(m_, c, p):
        den = m_ - 2 * c + p
        return np.clip(0.5 * (m_ - p) / den, -0.5, 0.5) if np.isfinite(m_) and np.isfinite(p) and den < 0 else 0.0
    return np.array([c0[0] + i - radius + vert(at(i - 1, k), cc[i, k], at(i + 1, k)),
                     c0[1] + k - radius + vert(at(i, k - 1), cc[i, k], at(i, k + 1))])

def fit_matrix(rows, step=STEP):
    """least squares step*du = M theta -> M (Å/rad)"""
    D = np.array([r[0] for r in rows]) * step; T = np.array([r[1] for r in rows])
    X, *_ = np.linalg.lstsq(T, D, rcond=None)       # D = T X, X = M^T
    return X.T

def defocus_of(rows, step=STEP, G=None):
    """defocus = sum d.theta / sum |theta|^2, d = step*du (theta=0 rotation), or d = G du (G: grid map Å/step)"""
    D = np.array([r[0] for r in rows]); T = np.array([r[1] for r in rows])
    D = D * step if G is None else D @ G.T
    return (D * T).sum() / (T * T).sum()

def periodic_shift(a, b, around, ups=100, radius=None):
    """continuous maximum of the periodic cross-correlation sum_g A(g) B*(g) e^{+2pi i g.d}:
    a(u+d) ~ b(u). Coarse on integer grid near `around`, then local upsampled DFT refinement."""
    sy, sx = a.shape
    A = np.fft.fft2(a - a.mean()); B = np.fft.fft2(b - b.mean())
    X = A * np.conj(B)
    gy = np.fft.fftfreq(sy)[:, None]; gx = np.fft.fftfreq(sx)[None, :]
    def cc(d): return np.real((X * np.exp(2j * np.pi * (gy * d[0] + gx * d[1]))).sum())
    c0 = np.round(around).astype(int)
    R = 3 if radius is None else radius
    best = max(((cc([c0[0] + i, c0[1] + k]), (c0[0] + i, c0[1] + k)) for i in range(-R, R + 1) for k in range(-R, R + 1)))[1]
    d = np.array(best, float); h = 1.0
    for _ in range(4):      # grid refinements: step h/10
        h /= 10
        cands = [(cc(d + [i * h, k * h]), i, k) for i in range(-10, 11) for k in range(-10, 11)]
        _, i, k = max(cands); d = d + [i * h, k * h]
    return d

def run_rings(imgs, angles_rad, shift_fn=None, first=8, later=2, ring_sizes=None):
    """ptytile ring-by-ring search: imgs[0] central reference; angles_rad [nd,2] (y,x)"""
    if shift_fn is None: shift_fn = ncc_shift
    nd = len(imgs) - 1
    ring_sizes = ring_sizes or [PER_RING] * (nd // PER_RING)
    rows = []; M = np.zeros((2, 2)); i = 1
    for ri, n in enumerate(ring_sizes):
        for _ in range(n):
            t = angles_rad[i]; pred = M @ t / STEP
            d = shift_fn(imgs[i], imgs[0], pred, first if ri == 0 else later)
            rows.append((d, t)); i += 1
        if len(rows) >= 3: M = fit_matrix(rows)
    return rows

def pshift_many(imgs, ref, preds, R=2, levels=3):
    """vectorisable periodic-CC continuous maximum for many images against one reference.
    imgs [n,Sy,Sx]; preds [n,2] (steps). Returns [n,2]: a(u+d) ~ ref(u)."""
    n, sy, sx = imgs.shape
    A = np.fft.fft2(imgs - imgs.mean((1, 2), keepdims=True)); B = np.fft.fft2(ref - ref.mean())
    X = A * np.conj(B)[None]
    gy = np.fft.fftfreq(sy); gx = np.fft.fftfreq(sx)
    out = np.zeros((n, 2))
    for j in range(n):
        d = np.round(preds[j]).astype(float); h = 1.0; w = R
        for lev in range(levels + 1):
            oy = d[0] + np.arange(-w, w + 1) * h; ox = d[1] + np.arange(-w, w + 1) * h
            Ey = np.exp(2j * np.pi * np.outer(oy, gy)); Ex = np.exp(2j * np.pi * np.outer(gx, ox))
            C = np.real(Ey @ X[j] @ Ex)
            i, k = np.unravel_index(np.argmax(C), C.shape); d = np.array([oy[i], ox[k]])
            h /= 10; w = 10
        out[j] = d
    return out

def lowpass(imgs, qmax_rad, step=STEP, lam=LAM):
    """keep the (periodic) Fourier components with lam*|g| <= qmax_rad (g in 1/Å)"""
    sy, sx = imgs.shape[-2:]
    gy = np.fft.fftfreq(sy, d=step)[:, None]; gx = np.fft.fftfreq(sx, d=step)[None, :]
    mk = lam * np.hypot(gy, gx) <= qmax_rad
    return np.real(np.fft.ifft2(np.fft.fft2(imgs) * mk))
