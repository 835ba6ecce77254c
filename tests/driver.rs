//! The driver as a library type: [`RankRun`] stepped by its caller (as a live
//! reconstruction will) gives the same bits as the plain loop of `driver::run`, with a
//! checkpoint taken between steps, on thread ranks.

mod common;

use ptytile::comm::{self, Comm};
use ptytile::config::Config;
use ptytile::driver::{self, RankRun};

fn bits(v: &[num_complex::Complex32]) -> Vec<u32> {
    v.iter()
        .flat_map(|c| [c.re.to_bits(), c.im.to_bits()])
        .collect()
}

#[test]
fn stepped_rank_runs_equal_the_plain_loop_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg_path) = common::small_scan(dir.path(), 1e5, 5);
    let ck = dir.path().join("ck");
    let set = vec![
        "parallel.ranks=4".to_string(),
        "reconstruction.iterations=6".into(),
        "output.png=false".into(),
        format!("checkpoint.dir=\"{}\"", ck.display()),
    ];
    let cfg = Config::load(&cfg_path, &set).unwrap();
    let plain = driver::run(&cfg, &|_, _, _, _| {}).unwrap().unwrap();

    let stepped = comm::run_threads(4, |mut c| {
        let rank = c.rank();
        let mut run = RankRun::new(&cfg, &mut c, None, None)?;
        assert_eq!((run.next_iteration(), run.iterations()), (0, 6));
        let mut losses = Vec::new();
        while !run.is_done() {
            let r = run.step(&|_, _, _, _| {})?;
            losses.push(r.loss);
            if r.iteration == 2 {
                // a checkpoint between steps changes nothing that follows
                run.checkpoint()?;
            }
        }
        assert_eq!(run.loss(), &losses[..]);
        let err = run.step(&|_, _, _, _| {}).unwrap_err();
        assert!(
            err.to_string().contains("reconstruction.iterations"),
            "rank {rank}: {err}"
        );
        run.finish()
    })
    .unwrap();
    let stepped = stepped
        .into_iter()
        .next()
        .unwrap()
        .expect("rank 0's result");
    assert!(
        bits(&stepped.object.data) == bits(&plain.object.data),
        "object"
    );
    assert!(bits(&stepped.probe) == bits(&plain.probe), "probe");
    let l = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(l(&stepped.loss), l(&plain.loss), "loss");
    assert!(
        ck.join("manifest.toml").exists(),
        "the checkpoint was written"
    );
    let attr =
        |r: &ptytile::output::ReconResult, n: &str| r.attrs.iter().find(|a| a.0 == n).map(|a| a.1);
    for name in ["ranks", "patterns_used", "messages_per_iteration_max_rank"] {
        assert_eq!(attr(&stepped, name), attr(&plain, name), "{name}");
    }
}
