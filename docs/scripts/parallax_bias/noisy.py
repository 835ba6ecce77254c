# Poisson noise at the file's dose on a noise-free simulation: python3 noisy.py IN.npy OUT.npy SEED
import numpy as np, sys
I = np.load(sys.argv[1]); rng = np.random.default_rng(int(sys.argv[3]))
np.save(sys.argv[2], rng.poisson(I).astype(np.float32))
