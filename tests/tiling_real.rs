//! Tiling exactness on the shipped real data (issue "Exact at any scale"): a 20 × 20 block
//! of the PbTiO3 4D-STEM scan (its real positions in Å, counts, 128 × 128 patterns),
//! reconstructed with the shipped config's settings (probe formed from the metadata and
//! refined) by 1 thread rank and by several tilings; the object and probe after 10
//! iterations must equal the 1-rank result to [`TOL`] relative (L2), for gd, dm, mlcg and a
//! dm → mlcg schedule, with the Poisson and amplitude noise models. The tilings include
//! tiles smaller than the 128-px window (every tile of 2 × 2 and 4 × 4 is), so halos
//! span several owners. The multislice model (S = 3 slices, all of them in every halo
//! message) is checked the same way on a block of the thick PbTiO3 file. The same under
//! `mpirun -n 4`: tests/tiling_mpi.rs.

mod common;

/// Largest relative L2 difference accepted between a tiled and the 1-rank result.
const TOL: f64 = 1e-6;

/// Run `extra` on 1 rank and on `tilings`; assert every result within [`TOL`].
fn assert_exact(extra: &[&str], tilings: &[[usize; 2]]) {
    let mut extra = extra.to_vec();
    extra.push("reconstruction.iterations=10");
    assert_exact_with(&extra, "", tilings)
}

/// [`assert_exact`] with `tail` appended to the config (a `[[schedule]]` of 10 iterations)
/// and `extra` as given.
fn assert_exact_with(extra: &[&str], tail: &str, tilings: &[[usize; 2]]) {
    assert_exact_on(common::pbtio3_crop, extra, tail, tilings)
}

/// [`assert_exact_with`] on the crop that `crop` writes (thin or thick PbTiO3).
fn assert_exact_on(
    crop: fn(&std::path::Path, usize) -> std::path::PathBuf,
    extra: &[&str],
    tail: &str,
    tilings: &[[usize; 2]],
) {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crop(dir.path(), 20);
    if !tail.is_empty() {
        let toml = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("iterations = 20\n", "")
            + "\n"
            + tail;
        cfg = cfg.with_file_name("schedule.toml");
        std::fs::write(&cfg, toml).unwrap();
    }
    let one = common::recon_tiles(&cfg, [1, 1], &extra);
    assert!(
        one.loss[9] < one.loss[0],
        "{extra:?} does not lower the loss: {:?}",
        one.loss
    );
    let mut worst = Vec::new();
    for &t in tilings {
        let r = common::recon_tiles(&cfg, t, &extra);
        let (eo, ep) = (
            common::rel_l2(&r.object.data, &one.object.data),
            common::rel_l2(&r.probe, &one.probe),
        );
        eprintln!(
            "{extra:?} tiles {t:?}: object {eo:.2e}, probe {ep:.2e}, loss {:.9e} vs {:.9e}",
            r.loss[9], one.loss[9]
        );
        if !(eo <= TOL && ep <= TOL) {
            worst.push(format!("{t:?}: object {eo:.2e}, probe {ep:.2e}"));
        }
    }
    assert!(
        worst.is_empty(),
        "{extra:?}: tiled != single rank: {}",
        worst.join("; ")
    );
}

const TILINGS: [[usize; 2]; 4] = [[1, 2], [2, 2], [3, 1], [4, 4]];

#[test]
fn gd_poisson_real_data() {
    assert_exact(&[], &TILINGS);
}

#[test]
fn gd_amplitude_real_data() {
    assert_exact(&["reconstruction.noise_model=\"amplitude\""], &TILINGS);
}

#[test]
fn dm_real_data() {
    assert_exact(&["reconstruction.engine=\"dm\""], &TILINGS);
}

#[test]
fn dm_amplitude_real_data() {
    assert_exact(
        &[
            "reconstruction.engine=\"dm\"",
            "reconstruction.noise_model=\"amplitude\"",
        ],
        &[[2, 2], [4, 4]],
    );
}

#[test]
fn mlcg_real_data() {
    assert_exact(&["reconstruction.engine=\"mlcg\""], &TILINGS);
}

#[test]
fn mlcg_amplitude_real_data() {
    assert_exact(
        &[
            "reconstruction.engine=\"mlcg\"",
            "reconstruction.noise_model=\"amplitude\"",
        ],
        &[[2, 2], [4, 4]],
    );
}

/// dm for 5 iterations (the last 2 of them error reduction), then mlcg for 5.
#[test]
fn dm_then_mlcg_schedule_real_data() {
    let tail = "[[schedule]]\nengine = \"dm\"\niterations = 5\n\n[[schedule]]\nengine = \"mlcg\"\niterations = 5\n";
    assert_exact_with(&["dm.er_iterations=2"], tail, &TILINGS);
}

/// Multislice, S = 3 slices of 11.07 Å (the thick file's 33.2 Å), gd and mlcg with the
/// axial regulariser on, on a block of the thick PbTiO3 file (issue "Multislice").
const MULTISLICE: [&str; 4] = [
    "reconstruction.slices=3",
    "reconstruction.slice_thickness_m=11.07e-10",
    "reconstruction.axial_regularization=0.05",
    "reconstruction.iterations=10",
];

#[test]
fn gd_multislice_real_data() {
    let mut extra = MULTISLICE.to_vec();
    extra.push("reconstruction.engine=\"gd\"");
    assert_exact_on(
        common::pbtio3_thick_crop,
        &extra,
        "",
        &[[2, 2], [1, 2], [4, 4]],
    );
}

#[test]
fn mlcg_multislice_real_data() {
    let mut extra = MULTISLICE.to_vec();
    extra.push("reconstruction.engine=\"mlcg\"");
    assert_exact_on(common::pbtio3_thick_crop, &extra, "", &[[2, 2], [3, 1]]);
}
