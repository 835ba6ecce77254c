//! Resolution without a ground truth (issue 14): `[data] subset = "even" | "odd"` and
//! `ptytile frc`, on a 20 × 20 block of the PbTiO3 scan (crop as the other real-data tests).

mod common;

use ptytile::analysis::frc::{frc_files, half_bit};
use ptytile::output::write_result;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ptytile");

/// The halves hold 200 patterns each (the checkerboard of a 20 × 20 raster), and `ptytile
/// frc` of the two half reconstructions writes a CSV of 22 rings (0 … 21 for the 42 × 42
/// scanned area's Nyquist, ½-bit threshold as van Heel & Schatz give it) and a plot, and a
/// result against itself never falls below the threshold. Bad input: one line, exit 2.
#[test]
fn halves_and_frc_command() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::pbtio3_crop(dir.path(), 20);
    let mut files = Vec::new();
    for s in ["even", "odd"] {
        let r = common::recon_tiles(
            &cfg,
            [2, 2],
            &[
                format!("data.subset=\"{s}\""),
                "reconstruction.iterations=5".into(),
            ],
        );
        let attr = |n: &str| r.attrs.iter().find(|a| a.0 == n).unwrap().1;
        assert_eq!(attr("patterns_used"), 200.0, "{s}");
        assert!(r.excluded.is_empty(), "{s}: no outlier in the intact crop");
        let out = dir.path().join(format!("{s}.h5"));
        write_result(&out, &r, false).unwrap();
        files.push(out);
    }
    let same = frc_files(&files[0], &files[0]).unwrap();
    assert!(
        same.crossing_per_px.is_none()
            && same.rings.frc[1..].iter().all(|f| (f - 1.0).abs() < 1e-9)
    );
    let o = Command::new(BIN)
        .args([
            "frc",
            files[0].to_str().unwrap(),
            files[1].to_str().unwrap(),
            "--output",
        ])
        .arg(dir.path().join("f"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.starts_with("FRC ½-bit resolution: "), "{stdout}");
    let csv = std::fs::read_to_string(dir.path().join("f.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "frequency_per_angstrom,frequency_per_pixel,frc,half_bit_threshold,ring_pixels"
    );
    let rep = frc_files(&files[0], &files[1]).unwrap();
    assert_eq!(
        (lines.len() - 1, rep.area[1] - rep.area[0]),
        (rep.rings.frc.len(), 42)
    );
    let row: Vec<f64> = lines[3].split(',').map(|v| v.parse().unwrap()).collect();
    assert!(
        (row[3] - half_bit(row[4] as usize)).abs() < 1e-6 && (row[1] - 2.0 / 42.0).abs() < 1e-6,
        "{row:?}"
    );
    assert!(
        (row[0] - row[1] / 0.1828125).abs() < 1e-4,
        "1/Å = (1/px) / 0.1828 Å"
    );
    assert!(
        rep.rings.frc[1] > 0.9,
        "the halves agree at the lowest frequency: {}",
        rep.rings.frc[1]
    );
    assert!(std::fs::metadata(dir.path().join("f.png")).unwrap().len() > 5000);
    // bad input: one line naming the file, exit code 2
    let o = Command::new(BIN)
        .args(["frc", files[0].to_str().unwrap(), "/nonexistent/b.h5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        (o.status.code(), err.lines().count()),
        (Some(2), 1),
        "{err}"
    );
    assert!(err.contains("/nonexistent/b.h5"), "{err}");
    let o = Command::new(BIN)
        .args([
            "reconstruct",
            cfg.to_str().unwrap(),
            "--set",
            "data.subset=\"diagonal\"",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        (o.status.code(), err.lines().count()),
        (Some(2), 1),
        "{err}"
    );
    assert!(err.contains("subset"), "{err}");
}
