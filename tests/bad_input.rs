//! The malformed-input corpus: each case builds a hostile data file, config or command line
//! from a small simulated dataset (nothing binary is committed), runs `ptytile reconstruct`
//! and requires exit code 2, exactly one line on stderr that names the culprit (file,
//! dataset, attribute, key or option) and says what is wrong, no panic, no output file left
//! behind, and the data file untouched. `corpus_all_cases` runs every case and reports each
//! failing one; it also requires the corpus to hold at least 30 cases.

use hdf5::types::VarLenUnicode;
use ptytile::simulate::{simulate, write, SimParams};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_ptytile");

/// The binary with default logging and HDF5 file locking off: test threads fork children
/// while other threads hold HDF5 files open, and inherited lock descriptors would make
/// unrelated opens fail.
fn ptytile() -> Command {
    let mut c = Command::new(BIN);
    c.env("HDF5_USE_FILE_LOCKING", "FALSE")
        .env_remove("RUST_LOG");
    c
}

/// Bytes of a small valid dataset (9 patterns of 16 × 16, metadata in /meta), made once.
fn valid_bytes() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = SimParams {
            m: 16,
            scan: [3, 3],
            step_px: 2.0,
            semiangle_mrad: 40.0,
            pixel_size_m: 0.3e-10,
            dose: Some(1e4),
            ..Default::default()
        };
        let f = dir.path().join("d.h5");
        write(&f, &simulate(&p).unwrap(), &p).unwrap();
        std::fs::read(f).unwrap()
    })
}

/// A fresh directory holding the valid dataset as `d.h5`.
fn valid() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.h5");
    std::fs::write(&f, valid_bytes()).unwrap();
    (dir, f)
}

/// `dir/v.h5`: a copy of the valid dataset edited by `edit`.
fn variant(dir: &Path, edit: impl Fn(&hdf5::File) -> hdf5::Result<()>) -> &'static str {
    let dst = dir.join("v.h5");
    std::fs::write(&dst, valid_bytes()).unwrap();
    let f = hdf5::File::open_rw(&dst).unwrap();
    edit(&f).unwrap();
    "v.h5"
}

/// `dir/c.toml` reading `data` (relative to dir) with `extra` TOML lines in [data] (or
/// further sections), 2 iterations, output `dir/out/r.h5`.
fn config(dir: &Path, data: &str, extra: &str) -> PathBuf {
    let c = dir.join("c.toml");
    std::fs::write(
        &c,
        format!(
            "[data]\nfile = {data:?}\nintensities = '/data/intensities'\npositions = '/data/positions_px'\n{extra}\n[reconstruction]\niterations = 2\n[output]\npath = {:?}\n",
            dir.join("out/r.h5").display().to_string()
        ),
    )
    .unwrap();
    c
}

/// Replace dataset `path` by one of `shape` holding `data`.
fn rewrite<T: hdf5::H5Type>(
    f: &hdf5::File,
    path: &str,
    shape: &[usize],
    data: &[T],
) -> hdf5::Result<()> {
    f.unlink(path)?;
    f.new_dataset::<T>()
        .shape(shape)
        .create(path)?
        .write_raw(data)
}

/// Replace attribute `name` of /meta by `values` (shape [len]).
fn meta_attr(f: &hdf5::File, name: &str, values: &[f64]) -> hdf5::Result<()> {
    let g = f.group("meta")?;
    let _ = g.delete_attr(name);
    g.new_attr::<f64>()
        .shape(values.len())
        .create(name)?
        .write_raw(values)
}

/// Intensities with one value changed.
fn poke_intensity(f: &hdf5::File, at: usize, v: f32) -> hdf5::Result<()> {
    let mut d = vec![1f32; 9 * 256];
    d[at] = v;
    rewrite(f, "/data/intensities", &[9, 16, 16], &d)
}

/// Positions with one value changed (row-major [9, 2]).
fn poke_position(f: &hdf5::File, at: usize, v: f64) -> hdf5::Result<()> {
    let mut p: Vec<f64> = (0..18)
        .map(|i| (i / 2) as f64 * 2.0 + (i % 2) as f64)
        .collect();
    p[at] = v;
    rewrite(f, "/data/positions_px", &[9, 2], &p)
}

/// A probe dataset at /probe_in.
fn probe<T: hdf5::H5Type>(f: &hdf5::File, shape: &[usize], data: &[T]) -> hdf5::Result<()> {
    f.new_dataset::<T>()
        .shape(shape)
        .create("/probe_in")?
        .write_raw(data)
}

/// What a case runs: config, extra arguments.
struct Run {
    config: PathBuf,
    args: Vec<String>,
}

fn run(config: PathBuf) -> Run {
    Run {
        config,
        args: Vec::new(),
    }
}

fn run_with(config: PathBuf, args: &[&str]) -> Run {
    Run {
        config,
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// One hostile input: a name, how to build it in a directory holding the valid `d.h5`, and
/// the words its one error line must contain.
struct Case {
    name: &'static str,
    make: fn(&Path) -> Run,
    needles: &'static [&'static str],
}

type C32 = num_complex::Complex32;

const CASES: &[Case] = &[
    // ---- the data file itself
    Case {
        name: "missing file",
        make: |d| run(config(d, "nope.h5", "")),
        needles: &["nope.h5", "no such file"],
    },
    Case {
        name: "data path is a directory",
        make: |d| {
            std::fs::create_dir(d.join("adir")).unwrap();
            run(config(d, "adir", ""))
        },
        needles: &["adir", "directory"],
    },
    Case {
        name: "text file, not HDF5",
        make: |d| {
            std::fs::write(d.join("t.h5"), b"this is not HDF5").unwrap();
            run(config(d, "t.h5", ""))
        },
        needles: &["t.h5", "HDF5"],
    },
    Case {
        name: "empty file",
        make: |d| {
            std::fs::write(d.join("e.h5"), b"").unwrap();
            run(config(d, "e.h5", ""))
        },
        needles: &["e.h5", "HDF5"],
    },
    Case {
        name: "truncated HDF5 (half the file)",
        make: |d| {
            let b = valid_bytes();
            std::fs::write(d.join("t.h5"), &b[..b.len() / 2]).unwrap();
            run(config(d, "t.h5", ""))
        },
        needles: &["t.h5", "HDF5", "truncated"],
    },
    Case {
        name: "truncated HDF5 (superblock only)",
        make: |d| {
            std::fs::write(d.join("t.h5"), &valid_bytes()[..96]).unwrap();
            run(config(d, "t.h5", ""))
        },
        needles: &["t.h5", "HDF5"],
    },
    Case {
        name: "HDF5 signature damaged",
        make: |d| {
            let mut b = valid_bytes().to_vec();
            b[1] ^= 0x20;
            std::fs::write(d.join("t.h5"), &b).unwrap();
            run(config(d, "t.h5", ""))
        },
        needles: &["t.h5", "HDF5"],
    },
    // ---- intensities
    Case {
        name: "missing intensities dataset",
        make: |d| {
            run_with(
                config(d, "d.h5", ""),
                &["--set", "data.intensities=/data/nothing"],
            )
        },
        needles: &["d.h5:/data/nothing", "no such dataset"],
    },
    Case {
        name: "intensities path is a group",
        make: |d| run_with(config(d, "d.h5", ""), &["--set", "data.intensities=/data"]),
        needles: &["d.h5:/data", "not a dataset"],
    },
    Case {
        name: "empty intensities path",
        make: |d| run_with(config(d, "d.h5", ""), &["--set", "data.intensities=''"]),
        needles: &["data.intensities", "empty"],
    },
    Case {
        name: "intensities of rank 2",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    rewrite(h, "/data/intensities", &[9, 256], &[1f32; 9 * 256])
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/intensities", "rank 3"],
    },
    Case {
        name: "non-square patterns",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    rewrite(h, "/data/intensities", &[9, 16, 8], &[1f32; 9 * 128])
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/intensities", "square"],
    },
    Case {
        name: "zero-size intensities",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    rewrite::<f32>(h, "/data/intensities", &[0, 16, 16], &[])
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/intensities", "empty"],
    },
    Case {
        name: "one-pixel patterns",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    rewrite(h, "/data/intensities", &[9, 1, 1], &[1f32; 9])
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/intensities", "empty"],
    },
    Case {
        name: "absurd detector size (unwritten 16384x16384 chunks)",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    h.unlink("/data/intensities")?;
                    h.new_dataset::<f32>()
                        .shape([9, 16384, 16384])
                        .chunk([1, 256, 256])
                        .create("/data/intensities")
                        .map(|_| ())
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/intensities", "absurd shape"],
    },
    Case {
        name: "complex intensities",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    rewrite(
                        h,
                        "/data/intensities",
                        &[9, 16, 16],
                        &[C32::new(1.0, 0.0); 9 * 256],
                    )
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/intensities", "dtype"],
    },
    Case {
        name: "string intensities",
        make: |d| {
            let s: VarLenUnicode = "1.0".parse().unwrap();
            run(config(
                d,
                variant(d, |h| {
                    rewrite(
                        h,
                        "/data/intensities",
                        &[9, 16, 16],
                        &vec![s.clone(); 9 * 256],
                    )
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/intensities", "dtype"],
    },
    Case {
        name: "NaN intensity",
        make: |d| {
            run(config(
                d,
                variant(d, |h| poke_intensity(h, 5 * 256 + 7, f32::NAN)),
                "",
            ))
        },
        needles: &["v.h5:/data/intensities", "NaN", "pattern 5"],
    },
    Case {
        name: "infinite intensity",
        make: |d| {
            run(config(
                d,
                variant(d, |h| poke_intensity(h, 8 * 256 + 255, f32::INFINITY)),
                "",
            ))
        },
        needles: &["v.h5:/data/intensities", "infinite", "pattern 8"],
    },
    Case {
        name: "negative intensity",
        make: |d| {
            run(config(
                d,
                variant(d, |h| poke_intensity(h, 2 * 256, -3.0)),
                "",
            ))
        },
        needles: &["v.h5:/data/intensities", "negative", "pattern 2"],
    },
    Case {
        name: "all intensities zero",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    rewrite(h, "/data/intensities", &[9, 16, 16], &[0u8; 9 * 256])
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/intensities", "all intensities are zero"],
    },
    // ---- positions
    Case {
        name: "positions of shape [N, 3]",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    rewrite(h, "/data/positions_px", &[9, 3], &[1f64; 27])
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/positions_px", "[N, 2]"],
    },
    Case {
        name: "fewer positions than patterns",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    rewrite(h, "/data/positions_px", &[8, 2], &[1f64; 16])
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/positions_px", "8 positions but 9"],
    },
    Case {
        name: "zero-size positions",
        make: |d| {
            run(config(
                d,
                variant(d, |h| rewrite::<f64>(h, "/data/positions_px", &[0, 2], &[])),
                "",
            ))
        },
        needles: &["v.h5:/data/positions_px", "0 positions but 9"],
    },
    Case {
        name: "string positions",
        make: |d| {
            let s: VarLenUnicode = "1.0".parse().unwrap();
            run(config(
                d,
                variant(d, |h| {
                    rewrite(h, "/data/positions_px", &[9, 2], &vec![s.clone(); 18])
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/positions_px", "dtype"],
    },
    Case {
        name: "infinite position",
        make: |d| {
            run(config(
                d,
                variant(d, |h| poke_position(h, 4, f64::INFINITY)),
                "",
            ))
        },
        needles: &["v.h5:/data/positions_px", "non-finite", "position 2"],
    },
    Case {
        name: "NaN position",
        make: |d| {
            run(config(
                d,
                variant(d, |h| poke_position(h, 15, f64::NAN)),
                "",
            ))
        },
        needles: &["v.h5:/data/positions_px", "non-finite", "position 7"],
    },
    Case {
        name: "positions outside any field of view",
        make: |d| run(config(d, variant(d, |h| poke_position(h, 17, 3e9)), "")),
        needles: &["v.h5:/data/positions_px", "field of view"],
    },
    Case {
        name: "all positions identical",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    rewrite(h, "/data/positions_px", &[9, 2], &[5f64; 18])
                }),
                "",
            ))
        },
        needles: &["v.h5:/data/positions_px", "within 1e-3 px"],
    },
    // ---- initial probe
    Case {
        name: "missing probe dataset",
        make: |d| run(config(d, "d.h5", "probe = '/nothing'")),
        needles: &["d.h5:/nothing", "no such dataset"],
    },
    Case {
        name: "probe of the wrong size",
        make: |d| {
            run(config(
                d,
                variant(d, |h| probe(h, &[8, 8], &[C32::new(1.0, 0.0); 64])),
                "probe = '/probe_in'",
            ))
        },
        needles: &["v.h5:/probe_in", "M = 16"],
    },
    Case {
        name: "real-valued probe",
        make: |d| {
            run(config(
                d,
                variant(d, |h| probe(h, &[16, 16], &[1f32; 256])),
                "probe = '/probe_in'",
            ))
        },
        needles: &["v.h5:/probe_in", "not complex"],
    },
    Case {
        name: "NaN in the probe",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    let mut p = vec![C32::new(1.0, 0.0); 256];
                    p[17].im = f32::NAN;
                    probe(h, &[16, 16], &p)
                }),
                "probe = '/probe_in'",
            ))
        },
        needles: &["v.h5:/probe_in", "non-finite"],
    },
    Case {
        name: "zero probe",
        make: |d| {
            run(config(
                d,
                variant(d, |h| probe(h, &[2, 16, 16], &[C32::new(0.0, 0.0); 512])),
                "probe = '/probe_in'",
            ))
        },
        needles: &["v.h5:/probe_in", "zero everywhere"],
    },
    // ---- metadata (file attributes and [experiment])
    Case {
        name: "zero energy in the config",
        make: |d| run(config(d, "d.h5", "[experiment]\nenergy_ev = 0.0")),
        needles: &["experiment.energy_ev", "positive"],
    },
    Case {
        name: "negative sampling override",
        make: |d| {
            run_with(
                config(d, "d.h5", ""),
                &["--set", "experiment.angular_sampling_mrad=-0.5"],
            )
        },
        needles: &["experiment.angular_sampling_mrad", "positive"],
    },
    Case {
        name: "negative energy attribute",
        make: |d| {
            run(config(
                d,
                variant(d, |h| meta_attr(h, "energy_eV", &[-5.0])),
                "",
            ))
        },
        needles: &[
            "v.h5:/meta@energy_eV",
            "experiment.energy_ev",
            "positive",
            "-5",
        ],
    },
    Case {
        name: "NaN sampling attribute",
        make: |d| {
            run(config(
                d,
                variant(d, |h| meta_attr(h, "angular_sampling_mrad", &[f64::NAN])),
                "",
            ))
        },
        needles: &["v.h5:/meta@angular_sampling_mrad", "NaN"],
    },
    Case {
        name: "infinite defocus attribute",
        make: |d| {
            run(config(
                d,
                variant(d, |h| meta_attr(h, "defocus_m", &[f64::INFINITY])),
                "",
            ))
        },
        needles: &["v.h5:/meta@defocus_m", "finite"],
    },
    Case {
        name: "string energy attribute",
        make: |d| {
            run(config(
                d,
                variant(d, |h| {
                    let g = h.group("meta")?;
                    g.delete_attr("energy_eV")?;
                    g.new_attr::<VarLenUnicode>()
                        .create("energy_eV")?
                        .write_scalar(&"300 kV".parse::<VarLenUnicode>().unwrap())
                }),
                "",
            ))
        },
        needles: &["v.h5:/meta@energy_eV", "not a number"],
    },
    Case {
        name: "empty energy attribute",
        make: |d| {
            run(config(
                d,
                variant(d, |h| meta_attr(h, "energy_eV", &[])),
                "",
            ))
        },
        needles: &["v.h5:/meta@energy_eV", "empty attribute"],
    },
    Case {
        name: "anisotropic sampling attribute",
        make: |d| {
            run(config(
                d,
                variant(d, |h| meta_attr(h, "angular_sampling_mrad", &[0.5, 0.7])),
                "",
            ))
        },
        needles: &["v.h5:/meta@angular_sampling_mrad", "anisotropic"],
    },
    Case {
        name: "energy missing everywhere",
        make: |d| {
            run(config(
                d,
                variant(d, |h| h.group("meta")?.delete_attr("energy_eV")),
                "",
            ))
        },
        needles: &["experiment.energy_ev", "missing"],
    },
    Case {
        name: "X-ray data without a detector distance",
        make: |d| {
            run(config(
                d,
                "d.h5",
                "[experiment]\nbeam = 'xray'\ndetector_pixel_size_m = 75e-6",
            ))
        },
        needles: &["experiment.detector_distance_m", "missing"],
    },
    // ---- the config file and command line
    Case {
        name: "missing config",
        make: |d| run(d.join("none.toml")),
        needles: &["none.toml"],
    },
    Case {
        name: "config path is a directory",
        make: |d| {
            std::fs::create_dir(d.join("cdir")).unwrap();
            run(d.join("cdir"))
        },
        needles: &["cdir", "directory"],
    },
    Case {
        name: "config is not text",
        make: |d| {
            std::fs::write(d.join("c.toml"), valid_bytes()).unwrap();
            run(d.join("c.toml"))
        },
        needles: &["c.toml", "UTF-8"],
    },
    Case {
        name: "TOML syntax error",
        make: |d| {
            std::fs::write(
                d.join("c.toml"),
                "[data]\nfile = 'd.h5'\nintensities = '/data/intensities\n",
            )
            .unwrap();
            run(d.join("c.toml"))
        },
        needles: &["c.toml", "line 3"],
    },
    Case {
        name: "no [data] section",
        make: |d| {
            std::fs::write(d.join("c.toml"), "[reconstruction]\niterations = 2\n").unwrap();
            run(d.join("c.toml"))
        },
        needles: &["c.toml", "data"],
    },
    Case {
        name: "unknown key",
        make: |d| run(config(d, "d.h5", "[experiment]\nenergy_kev = 300")),
        needles: &["c.toml", "energy_kev"],
    },
    Case {
        name: "unknown section",
        make: |d| run(config(d, "d.h5", "[solver]\nkind = 'dm'")),
        needles: &["c.toml", "solver"],
    },
    Case {
        name: "mistyped value",
        make: |d| run(config(d, "d.h5", "[parallel]\nranks = 'four'")),
        needles: &["c.toml", "four"],
    },
    Case {
        name: "negative iterations",
        make: |d| run_with(config(d, "d.h5", ""), &["--iterations", "-1"]),
        needles: &["-1"],
    },
    Case {
        name: "absurd iteration count",
        make: |d| {
            run_with(
                config(d, "d.h5", ""),
                &["--set", "reconstruction.iterations=1000000000000"],
            )
        },
        needles: &["reconstruction.iterations", "limit"],
    },
    Case {
        name: "absurd thread rank count",
        make: |d| run_with(config(d, "d.h5", ""), &["--ranks", "1000000"]),
        needles: &["parallel.ranks", "limit"],
    },
    Case {
        name: "zero probe modes",
        make: |d| {
            run_with(
                config(d, "d.h5", ""),
                &["--set", "reconstruction.probe_modes=0"],
            )
        },
        needles: &["reconstruction.probe_modes", "at least 1"],
    },
    Case {
        name: "NaN step",
        make: |d| run_with(config(d, "d.h5", ""), &["--set", "reconstruction.step=nan"]),
        needles: &["reconstruction.step"],
    },
    Case {
        name: "zero tiles",
        make: |d| run_with(config(d, "d.h5", ""), &["--set", "parallel.tiles=[0, 2]"]),
        needles: &["parallel.tiles", "at least 1"],
    },
    Case {
        name: "tiles that do not match the ranks",
        make: |d| {
            run_with(
                config(d, "d.h5", "[parallel]\nranks = 3\ntiles = [2, 2]"),
                &[],
            )
        },
        needles: &["parallel.tiles", "3 ranks"],
    },
    Case {
        name: "unknown enum value in an override",
        make: |d| {
            run_with(
                config(d, "d.h5", ""),
                &["--set", "reconstruction.noise_model=gaussian"],
            )
        },
        needles: &["gaussian"],
    },
    Case {
        name: "override without '='",
        make: |d| {
            run_with(
                config(d, "d.h5", ""),
                &["--set", "reconstruction.iterations"],
            )
        },
        needles: &["--set", "section.key=value"],
    },
    Case {
        name: "output path is a directory",
        make: |d| {
            std::fs::create_dir_all(d.join("out")).unwrap();
            run_with(
                config(d, "d.h5", ""),
                &["--output", d.join("out").to_str().unwrap()],
            )
        },
        needles: &["output.path", "directory"],
    },
    Case {
        name: "output path is the data file",
        make: |d| {
            run_with(
                config(d, "d.h5", ""),
                &["--output", d.join("d.h5").to_str().unwrap()],
            )
        },
        needles: &["output.path", "data file"],
    },
];

/// Run one case in a fresh directory; `Err` says how it failed the contract.
fn check(case: &Case) -> Result<String, String> {
    let (dir, data) = valid();
    let r = (case.make)(dir.path());
    let before = std::fs::read(&data).unwrap();
    let out = ptytile()
        .arg("reconstruct")
        .arg(&r.config)
        .args(&r.args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) {
        return Err(format!("exit code {:?}, stderr: {err}", out.status.code()));
    }
    if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
        return Err(format!("panic: {err}"));
    }
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != 1 {
        return Err(format!(
            "expected one line on stderr, got {}: {err}",
            lines.len()
        ));
    }
    if let Some(n) = case.needles.iter().find(|n| !lines[0].contains(*n)) {
        return Err(format!("'{n}' not in: {}", lines[0]));
    }
    let left: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    if !left.is_empty() {
        return Err(format!("output left behind: {left:?}"));
    }
    if std::fs::read(&data).ok().as_deref() != Some(&before[..]) {
        return Err("the data file was changed".into());
    }
    Ok(lines[0].to_string())
}

#[test]
fn corpus_all_cases() {
    let mut failed = Vec::new();
    for case in CASES {
        match check(case) {
            Ok(line) => eprintln!("ok   {:<48} {line}", case.name),
            Err(why) => {
                eprintln!("FAIL {:<48} {why}", case.name);
                failed.push(case.name);
            }
        }
    }
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "case names must be distinct");
    eprintln!(
        "{} of {} malformed-input cases pass",
        CASES.len() - failed.len(),
        CASES.len()
    );
    assert!(failed.is_empty(), "failing cases: {failed:?}");
    assert!(
        CASES.len() >= 30,
        "the corpus must hold at least 30 cases, has {}",
        CASES.len()
    );
}

#[test]
fn valid_dataset_runs() {
    let (dir, _) = valid();
    let out = ptytile()
        .arg("reconstruct")
        .arg(config(dir.path(), "d.h5", ""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("out/r.h5").exists());
}

#[test]
fn integer_counts_are_accepted() {
    let (dir, _) = valid();
    let v = variant(dir.path(), |h| {
        rewrite(h, "/data/intensities", &[9, 16, 16], &[3u16; 9 * 256])
    });
    let out = ptytile()
        .arg("reconstruct")
        .arg(config(dir.path(), v, ""))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
