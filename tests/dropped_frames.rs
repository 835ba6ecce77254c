//! Dropped and corrupt frames (issue 14): patterns whose total counts are far from the
//! scan's median are left out of the likelihood by default (`data::select::outliers`),
//! reported in the result's attributes, and `[data] exclude` adds a manual list. The
//! test data are copies of the shared PbTiO3 file in a temporary directory with a block
//! of patterns set to zero (as a detector that dropped them writes them).

mod common;

use ptytile::analysis::compare::compare_files;
use ptytile::output::{read_result, write_result};

/// Zero the patterns of scan rows and columns `r0..r0 + side` in `dir/NAME.h5`, a `scan` ×
/// `scan` cut written by `common::pbtio3_cut`; returns their indices (ascending).
fn zero_block(
    dir: &std::path::Path,
    name: &str,
    scan: usize,
    r0: usize,
    side: usize,
) -> Vec<usize> {
    let f = hdf5::File::open_rw(dir.join(format!("{name}.h5"))).unwrap();
    let ds = f.dataset("/data/intensities_poisson_dose1e05").unwrap();
    let m = ds.shape()[1];
    let zeros = ndarray::Array3::<f32>::zeros((side, m, m));
    let mut idx = Vec::new();
    for iy in r0..r0 + side {
        let j = iy * scan + r0;
        ds.write_slice(&zeros, ndarray::s![j..j + side, .., ..])
            .unwrap();
        idx.extend(j..j + side);
    }
    idx
}

/// The whole PbTiO3 scan (58 × 58, the shipped config: 20 gd iterations, 2 × 2 tiles)
/// with a 10 × 10 block of zero patterns in its middle: with the default rule the 100
/// patterns are found (exactly those), the result records them, and the phase correlation
/// with the ground truth is ≥ 0.98; with `exclude_outliers = false` the zeros enter the
/// likelihood and the correlation falls (0.9433 against 0.9834 with the rule, 2026-12-01).
#[test]
fn zero_block_is_left_out_and_pbtio3_reaches_098() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::pbtio3_cut(dir.path(), "zeros", 58, 128);
    let block = zero_block(dir.path(), "zeros", 58, 24, 10);
    let mut corr = Vec::new();
    for rule in [true, false] {
        let r = common::recon_tiles(&cfg, [2, 2], &[format!("data.exclude_outliers={rule}")]);
        assert_eq!(r.excluded, if rule { block.clone() } else { vec![] });
        let attr = |n: &str| r.attrs.iter().find(|a| a.0 == n).unwrap().1;
        assert_eq!(
            (attr("excluded_outlier_count"), attr("patterns_used")),
            if rule { (100.0, 3264.0) } else { (0.0, 3364.0) }
        );
        let out = dir.path().join(format!("rule_{rule}.h5"));
        write_result(&out, &r, false).unwrap();
        assert_eq!(read_result(&out).unwrap().excluded, r.excluded);
        let rep = compare_files(&out, &common::pbtio3_thin(), None).unwrap();
        eprintln!(
            "10 x 10 zero patterns, exclude_outliers = {rule}: phase correlation {:.4}",
            rep.phase_correlation
        );
        corr.push(rep.phase_correlation);
    }
    assert!(corr[0] >= 0.98, "with the rule: {}", corr[0]);
    assert!(
        corr[1] < corr[0] - 0.02,
        "without the rule {} is not worse than with it {}",
        corr[1],
        corr[0]
    );
}

/// Left-out patterns belong to no rank, so the tiling promise holds: on a 20 × 20 block
/// with a 5 × 5 zero block (outliers) and a manual list, 2 × 2 and 3 × 1 tiles give the
/// 1-rank object and probe to 1e-6 (relative L2) after 10 iterations; the result lists
/// both kinds of excluded patterns, and a manual index beyond the scan is refused naming
/// `data.exclude`.
#[test]
fn excluded_patterns_keep_tiled_equal_to_single_rank() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::pbtio3_cut(dir.path(), "crop", 20, 128);
    let zeros = zero_block(dir.path(), "crop", 20, 6, 5);
    let set = [
        "reconstruction.iterations=10".to_string(),
        "data.exclude=[0, 1, 399, 137]".into(),
    ];
    let one = common::recon_tiles(&cfg, [1, 1], &set);
    let mut want: Vec<usize> = zeros.iter().copied().chain([0, 1, 137, 399]).collect();
    want.sort_unstable();
    assert_eq!(one.excluded, want);
    assert!(one.loss[9] < one.loss[0], "{:?}", one.loss);
    for t in [[2, 2], [3, 1]] {
        let r = common::recon_tiles(&cfg, t, &set);
        let (eo, ep) = (
            common::rel_l2(&r.object.data, &one.object.data),
            common::rel_l2(&r.probe, &one.probe),
        );
        eprintln!("tiles {t:?}: object {eo:.2e}, probe {ep:.2e}");
        assert!(
            eo <= 1e-6 && ep <= 1e-6,
            "tiles {t:?}: object {eo:.2e}, probe {ep:.2e}"
        );
        assert_eq!(r.excluded, want);
    }
    let c = ptytile::config::Config::load(&cfg, &["data.exclude=[400]".into()]).unwrap();
    let err = ptytile::driver::run(&c, &|_, _, _, _| {}).unwrap_err();
    assert_eq!(
        err.to_string(),
        "data.exclude: pattern index 400 is out of range (the file has 400 patterns, 0..399)"
    );
}
