# raw 4D copy of pbtio3_thin.h5 (dose 1e5) for `ptytile calibrate` (stem4d), + intensities cache as .npy
import h5py, numpy as np
import os
THIN = os.environ.get('THIN', '../shared/datasets/pbtio3_thin.h5')  # the shipped file
f = h5py.File(THIN, 'r')
I = f['/data/intensities_poisson_dose1e05'][:]
np.save('I.npy', I)
with h5py.File('thin4d.h5', 'w') as g:
    g.create_dataset('/scan/data', data=I.reshape(58, 58, 128, 128))
    g.create_group('meta'); g['meta'].attrs['energy_eV'] = 300e3; g['meta'].attrs['angular_sampling_mrad'] = 0.84134568
open('thin4d.toml', 'w').write('[data]\nfile = "thin4d.h5"\nintensities = "/scan/data"\nscan_step_angstrom = 0.40344828\n[output]\npath = "out4d/recon.h5"\n')
