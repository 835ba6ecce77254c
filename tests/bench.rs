//! `ptytile bench` end to end on a block of the thick PbTiO3 file: the breakdown counts the
//! multislice propagations among the FFTs, and `--against` times a second setting in turn
//! and reports the ratio per pair (docs/performance.md).

mod common;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ptytile");

/// The median of "ratio of each pair (...): median R, range ..." in the bench's output.
fn pair_ratio(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("ratio of each pair"))
        .unwrap_or_else(|| panic!("no ratio line in\n{out}"));
    let v = line.split("median ").nth(1).unwrap();
    v.split(',').next().unwrap().trim().parse().unwrap()
}

/// Four slices against one on a 6 × 6 block (real patterns, 128²): the four-slice iteration
/// does 4 + 12 FFTs per position where one slice does 3.5–4, so the pairs' median ratio is
/// between 2 and 8 on any machine (about 4 measured); the FFT row counts 16 transforms.
#[test]
fn against_times_a_second_setting_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::pbtio3_thick_crop(dir.path(), 6);
    let o = Command::new(BIN)
        .arg("bench")
        .arg(&cfg)
        .args([
            "--repeats",
            "3",
            "--set",
            "reconstruction.engine=gd",
            "--set",
            "reconstruction.slices=4",
            "--set",
            "reconstruction.slice_thickness_m=8.3e-10",
            "--against",
            "reconstruction.slices=1",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("FFTs alone (16 2-D transforms"), "{out}");
    assert!(out.contains("| against reconstruction.slices=1 |"), "{out}");
    let r = pair_ratio(&out);
    assert!((2.0..8.0).contains(&r), "4 slices ÷ 1 slice = {r}\n{out}");
}

/// A bad `--against` override fails before any timing: one line naming the key, exit 2.
#[test]
fn against_with_a_bad_value_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::pbtio3_thick_crop(dir.path(), 4);
    let o = Command::new(BIN)
        .arg("bench")
        .arg(&cfg)
        .args(["--against", "reconstruction.slices=0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("reconstruction.slices"), "{err}");
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
