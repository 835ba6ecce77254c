//! Measurements from a live stream (`ptytile reconstruct --live`): the frames received so
//! far ([`Frames`]) and a [`DataFile`] over them, built from the stream's start message
//! (the planned scan and detector) and the config (the experiment; the stream's
//! `experiment` fills the keys the config leaves out). Frames are kept as sent, so the
//! patterns a live run reads are the same bytes an offline run reads from the file.

use super::stream::{Scan, Start};
use super::{object_grid, to_pixels, DataFile, Meta, Source};
use crate::config::{Beam, Config, DataFormat, ExperimentConfig};
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::sync::RwLock;

/// The frames of one scan received so far: N slots of M × M f32 samples
/// ([M(ky), M(kx)] row-major, zero frequency as the detector sends it), each empty until
/// its frame arrives, with the frame's total counts Σ I (f64, summed once as it arrives).
/// Shared by the receiving thread (writes) and the ranks (read).
#[derive(Debug)]
pub struct Frames {
    m: usize,
    slots: RwLock<Vec<Option<(Box<[f32]>, f64)>>>,
}

impl Frames {
    /// No frame of `n` frames of `m` × `m` yet.
    pub fn new(n: usize, m: usize) -> Self {
        Frames {
            m,
            slots: RwLock::new(vec![None; n]),
        }
    }

    /// Store frame `j`'s pattern ([M·M] samples; the decoder checked its length). Returns
    /// false, storing nothing, for an index past the scan, a pattern of another length or
    /// a frame already stored (the first copy is kept).
    pub fn insert(&self, j: usize, pattern: Vec<f32>) -> bool {
        if pattern.len() != self.m * self.m {
            return false;
        }
        // summed as DataFile::pattern_totals sums a file's pattern (a stream has no mask)
        let total: f64 = pattern.iter().map(|v| *v as f64).sum();
        let mut s = self.slots.write().unwrap_or_else(|e| e.into_inner());
        match s.get_mut(j) {
            Some(slot @ None) => {
                *slot = Some((pattern.into_boxed_slice(), total));
                true
            }
            _ => false,
        }
    }

    /// [N]: whether frame j has arrived.
    pub fn received(&self) -> Vec<bool> {
        let s = self.slots.read().unwrap_or_else(|e| e.into_inner());
        s.iter().map(Option::is_some).collect()
    }

    /// [N]: each frame's total counts, 0 for a frame that has not arrived (the input of
    /// `data::select::outliers`, equal to [`DataFile::pattern_totals`] of the same frames).
    pub fn totals(&self) -> Vec<f64> {
        let s = self.slots.read().unwrap_or_else(|e| e.into_inner());
        s.iter()
            .map(|slot| slot.as_ref().map_or(0.0, |p| p.1))
            .collect()
    }

    /// Frames `start..start + len` ([len, M, M] as sent); a frame that has not arrived reads
    /// as zeros (the selection of a live run leaves it out of every sum). Indices past the
    /// scan are not read (the caller checks the range).
    pub fn read(&self, start: usize, len: usize) -> Vec<f32> {
        let mm = self.m * self.m;
        let s = self.slots.read().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![0f32; len * mm];
        for (b, slot) in s.iter().skip(start).take(len).enumerate() {
            if let Some((p, _)) = slot {
                out[b * mm..(b + 1) * mm].copy_from_slice(p);
            }
        }
        out
    }
}

/// The experiment of a live run: the config's keys, each missing one taken from the
/// stream's start message (`stream`), the beam the config's unless only the stream
/// names one (the config's default is electrons).
pub fn merge_experiment(
    cfg: &ExperimentConfig,
    stream: Option<&ExperimentConfig>,
) -> ExperimentConfig {
    let Some(s) = stream else {
        return cfg.clone();
    };
    ExperimentConfig {
        beam: if cfg.beam == Beam::default() {
            s.beam
        } else {
            cfg.beam
        },
        energy_ev: cfg.energy_ev.or(s.energy_ev),
        convergence_semiangle_mrad: cfg
            .convergence_semiangle_mrad
            .or(s.convergence_semiangle_mrad),
        defocus_m: cfg.defocus_m.or(s.defocus_m),
        spherical_aberration_m: cfg.spherical_aberration_m.or(s.spherical_aberration_m),
        angular_sampling_mrad: cfg.angular_sampling_mrad.or(s.angular_sampling_mrad),
        detector_distance_m: cfg.detector_distance_m.or(s.detector_distance_m),
        detector_pixel_size_m: cfg.detector_pixel_size_m.or(s.detector_pixel_size_m),
        geometry: cfg.geometry,
    }
}

impl DataFile {
    /// The frame store of a live stream's dataset ([`DataFile::from_stream`]); None for a
    /// file.
    pub fn live_frames(&self) -> Option<std::sync::Arc<Frames>> {
        match &self.source {
            Source::Live(f) => Some(f.clone()),
            _ => None,
        }
    }

    /// The dataset of a live stream from `endpoint`: N = `start.frames` patterns of the
    /// start's detector, the planned positions (m) on the object grid exactly as
    /// [`DataFile::open`] places a file's (same unit conversion, same margin for
    /// `[position_correction]`), the experiment of [`merge_experiment`], the patterns read
    /// from `frames` (`data.zero_frequency` and `data.detector_transpose` apply as for a
    /// file).
    ///
    /// Errors (one line naming `--live` or the key): an unplanned scan (the tile plan needs
    /// the positions before the frames), a detector of another size than `frames`', missing
    /// or absurd experiment keys, positions spanning no sane field of view, `data.probe`
    /// (a live stream has no file to read a probe from: use `data.initial`).
    pub fn from_stream(
        cfg: &Config,
        endpoint: &str,
        start: &Start,
        frames: std::sync::Arc<Frames>,
    ) -> Result<DataFile> {
        let what = format!("--live {endpoint}");
        let m = start.detector.shape[0];
        if m != frames.m || start.frames != frames.received().len() {
            return Err(Error::new(&what, "frame store of another scan"));
        }
        if matches!(start.scan, Scan::Unplanned {}) {
            return Err(Error::new(
                &what,
                "the stream's scan is unplanned (positions only in the frames): the tile plan needs the planned positions in the start message",
            ));
        }
        if cfg.data.probe.is_some() {
            return Err(Error::new(
                "data.probe",
                "a live stream has no file to read a probe from (use data.initial, or leave it out to form the probe from the metadata)",
            ));
        }
        let keys = merge_experiment(&cfg.experiment, start.experiment.as_ref());
        let meta = Meta {
            file: None,
            pname: &what,
            intensities: "",
        };
        let (experiment, experiment_keys) = super::experiment(&keys, &meta, m)?;
        let pm: Vec<[f64; 2]> = (0..start.frames)
            .map(|j| start.planned_position(j).unwrap_or([0.0, 0.0]))
            .collect();
        let (centres, object_shape) =
            object_grid(&to_pixels(&pm, &experiment), m).map_err(|msg| Error::new(&what, msg))?;
        let mut df = DataFile {
            path: PathBuf::from(endpoint),
            source: Source::Live(frames),
            intensities_what: format!("{what} frames"),
            zero_frequency: cfg.data.zero_frequency,
            detector_transpose: cfg.data.detector_transpose,
            format: DataFormat::Hdf5,
            experiment,
            experiment_keys,
            n: start.frames,
            m,
            positions_m: Some(pm),
            centres,
            object_shape,
            initial_probe: None,
            bad_pixels: None,
            cxi: None,
        };
        df.pad_object(cfg.position_correction.margin_px());
        Ok(df)
    }
}
