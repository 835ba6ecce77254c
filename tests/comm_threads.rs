//! ThreadComm: point-to-point, collectives, failure detection.

use std::time::{Duration, Instant};

use num_complex::Complex32;
use ptytile::comm::*;
use ptytile::Error;

/// Deterministic per-rank test values (not trivially summable in any order).
fn values(rank: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + rank * 104729) % 1000) as f32 * 0.001 + rank as f32)
        .collect()
}

fn ring(n_floats: usize) {
    let t = Instant::now();
    let out = run_threads(4, |mut c| {
        let (r, n) = (c.rank(), c.size());
        c.isend((r + 1) % n, 7, f32s_to_bytes(&values(r, n_floats)))?;
        let got = bytes_to_f32s(&c.recv((r + n - 1) % n, 7)?)?;
        c.wait_sends()?;
        assert_eq!(got, values((r + n - 1) % n, n_floats));
        Ok(c.stats())
    })
    .unwrap();
    for s in &out {
        assert_eq!(s.messages_sent, 1);
        assert_eq!(s.bytes_sent, 4 * n_floats as u64);
    }
    eprintln!(
        "ring of {} bytes on 4 ranks: {:?}",
        4 * n_floats,
        t.elapsed()
    );
}

#[test]
fn ring_1kib() {
    ring(256);
}

#[test]
fn ring_16mib() {
    ring(4 << 20);
}

#[test]
fn out_of_order_tags_are_buffered() {
    run_threads(2, |mut c| {
        if c.rank() == 0 {
            for tag in [3u32, 1, 2, 1] {
                c.isend(1, tag, vec![tag as u8; tag as usize])?;
            }
            c.isend(1, 5, f64s_to_bytes(&[1.0, 2.0]))?;
            c.isend(1, 5, c32s_to_bytes(&[Complex32::new(1.0, -1.0)]))?;
        } else {
            // Receive in a different order from the sends; same-tag messages stay in order.
            assert_eq!(c.recv(0, 2)?, vec![2, 2]);
            assert_eq!(c.recv(0, 1)?, vec![1]);
            assert_eq!(c.recv(0, 3)?, vec![3, 3, 3]);
            assert_eq!(c.recv(0, 1)?, vec![1]);
            assert_eq!(bytes_to_f64s(&c.recv(0, 5)?)?, vec![1.0, 2.0]);
            assert_eq!(
                bytes_to_c32s(&c.recv(0, 5)?)?,
                vec![Complex32::new(1.0, -1.0)]
            );
        }
        c.wait_sends()
    })
    .unwrap();
}

fn sum_input(rank: usize) -> Vec<f64> {
    // Values whose sum depends on the order of addition.
    vec![
        1e16 * if rank % 2 == 0 { 1.0 } else { -1.0 },
        0.1 * (rank + 1) as f64,
        1.0 / (rank + 3) as f64,
        -0.0,
    ]
}

/// The documented all-reduce order, computed directly: the sum over ranks `a..b` is
/// `sum(a..a+h) + sum(a+h..b)`, h the largest power of two below `b − a`.
fn tree_sum(xs: &[f64]) -> f64 {
    if xs.len() == 1 {
        return xs[0];
    }
    let h = xs.len().next_power_of_two() / 2;
    tree_sum(&xs[..h]) + tree_sum(&xs[h..])
}

/// Per-rank values of very different magnitudes, so the sum depends on the order of addition.
fn tree_input(rank: usize, i: usize) -> f64 {
    let m = ((rank * 7919 + i * 104729) % 1000) as f64 - 499.5;
    m * 10f64.powi(((rank * 5 + i * 3) % 19) as i32 - 9) + 0.1 * (rank + 1) as f64
}

#[test]
fn allreduce_sum_is_tree_ordered_and_identical() {
    let k = 16;
    let mut differs_from_rank_order = 0;
    for n in 1..=17 {
        let out = run_threads(n, |mut c| {
            let mut v: Vec<f64> = (0..k).map(|i| tree_input(c.rank(), i)).collect();
            v.extend(sum_input(c.rank()));
            c.allreduce_sum(&mut v)?;
            let mut empty: [f64; 0] = [];
            c.allreduce_sum(&mut empty)?;
            Ok(v)
        })
        .unwrap();
        let cols: Vec<Vec<f64>> = (0..k)
            .map(|i| (0..n).map(|r| tree_input(r, i)).collect())
            .chain((0..4).map(|i| (0..n).map(|r| sum_input(r)[i]).collect()))
            .collect();
        let want: Vec<u64> = cols.iter().map(|c| tree_sum(c).to_bits()).collect();
        let linear: Vec<u64> = cols
            .iter()
            .map(|c| c.iter().skip(1).fold(c[0], |a, &x| a + x).to_bits())
            .collect();
        differs_from_rank_order += want.iter().zip(&linear).filter(|(a, b)| a != b).count();
        for (r, v) in out.iter().enumerate() {
            let bits: Vec<u64> = v.iter().map(|x| x.to_bits()).collect();
            assert_eq!(bits, want, "{n} ranks, rank {r}");
        }
    }
    // The inputs are order-sensitive: the test would catch a rank-order sum.
    eprintln!(
        "tree order differs from rank order in {differs_from_rank_order} of {} sums",
        17 * (k + 4)
    );
    assert!(differs_from_rank_order > 20, "{differs_from_rank_order}");
}

#[test]
fn allreduce_max_nan_and_tree_order() {
    for n in 1..=17 {
        let out = run_threads(n, |mut c| {
            let r = c.rank();
            // Element 2: NaN on the last rank only; element 3: -0 on even ranks, +0 on odd.
            let mut v = vec![
                r as f64,
                -(r as f64),
                if r + 1 == n { f64::NAN } else { r as f64 },
                if r % 2 == 0 { -0.0 } else { 0.0 },
            ];
            c.allreduce_max(&mut v)?;
            Ok(v)
        })
        .unwrap();
        for v in &out {
            assert_eq!(v[0], (n - 1) as f64);
            assert_eq!(v[1], 0.0);
            assert!(v[2].is_nan(), "{n} ranks: {v:?}");
            // Ties keep the lower ranks' value, so rank 0's -0 wins.
            assert_eq!(v[3].to_bits(), (-0.0f64).to_bits(), "{n} ranks");
            assert_eq!(
                v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                out[0].iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn allreduce_max() {
    let out = run_threads(4, |mut c| {
        let r = c.rank() as f64;
        let mut v = vec![r, -r, if c.rank() == 2 { f64::NAN } else { 0.0 }];
        c.allreduce_max(&mut v)?;
        Ok(v)
    })
    .unwrap();
    for v in out {
        assert_eq!(v[0], 3.0);
        assert_eq!(v[1], 0.0);
        assert!(v[2].is_nan());
    }
}

#[test]
fn gather_variable_sizes() {
    let out = run_threads(4, |mut c| {
        let r = c.rank();
        let g = c.gather(vec![r as u8; r * 3])?;
        c.barrier()?;
        Ok(g)
    })
    .unwrap();
    let all = out[0].as_ref().expect("rank 0 gets the gather");
    for (r, b) in all.iter().enumerate() {
        assert_eq!(b, &vec![r as u8; r * 3]);
    }
    assert!(out[1..].iter().all(|g| g.is_none()));
}

#[test]
fn stats_count_messages_and_bytes() {
    let out = run_threads(3, |mut c| {
        let r = c.rank();
        for to in 0..c.size() {
            c.isend(to, 1, vec![0; 10 * (r + 1)])?;
        }
        for from in 0..c.size() {
            c.recv(from, 1)?;
        }
        let mut x = [1.0];
        c.allreduce_sum(&mut x)?;
        Ok(c.stats())
    })
    .unwrap();
    for (r, s) in out.iter().enumerate() {
        assert_eq!(s.messages_sent, 3);
        assert_eq!(s.bytes_sent, 30 * (r as u64 + 1));
        assert_eq!(s.collectives, 1);
    }
}

/// Every other rank blocks in a receive from the failing rank or in a collective.
fn failing_job(fail: impl Fn(usize) -> Option<ptytile::Result<()>> + Sync) -> (Error, Duration) {
    let t = Instant::now();
    let err = run_threads(4, |mut c| {
        if let Some(r) = fail(c.rank()) {
            std::thread::sleep(Duration::from_millis(100));
            return r;
        }
        if c.rank() == 0 {
            c.recv(2, 9)?;
        }
        let mut x = [1.0];
        c.allreduce_sum(&mut x)?;
        Ok(())
    })
    .unwrap_err();
    (err, t.elapsed())
}

#[test]
fn rank_error_is_reported_promptly() {
    let (err, dt) = failing_job(|r| (r == 2).then(|| Err(Error::new("tile 7", "boom"))));
    eprintln!("error detected in {dt:?}: {err}");
    assert_eq!(err.to_string(), "rank 2: tile 7: boom");
    assert!(dt < Duration::from_secs(5), "took {dt:?}");
}

#[test]
fn rank_panic_is_reported_promptly() {
    let (err, dt) = failing_job(|r| {
        if r == 1 {
            panic!("deliberate panic on rank 1");
        }
        None
    });
    eprintln!("panic detected in {dt:?}: {err}");
    assert_eq!(
        err.to_string(),
        "rank 1 panicked: deliberate panic on rank 1"
    );
    assert!(dt < Duration::from_secs(5), "took {dt:?}");
}

#[test]
fn recv_times_out_naming_the_peer() {
    let t = Instant::now();
    let err = run_threads(2, |mut c| {
        c.set_timeout(Duration::from_millis(300));
        if c.rank() == 1 {
            c.recv(0, 4)?; // rank 0 never sends
        } else {
            std::thread::sleep(Duration::from_secs(1));
        }
        Ok(())
    })
    .unwrap_err();
    let dt = t.elapsed();
    eprintln!("timeout reported in {dt:?}: {err}");
    assert!(
        err.to_string()
            .starts_with("rank 1: recv from rank 0 tag 4: no message from rank 0"),
        "{err}"
    );
    assert!(dt < Duration::from_secs(3));
}

#[test]
fn bad_rank_and_tag_are_errors() {
    run_threads(2, |mut c| {
        assert!(c.isend(2, 0, vec![]).is_err());
        assert!(c.isend(0, MAX_TAG + 1, vec![]).is_err());
        assert!(c.recv(5, 0).is_err());
        Ok(())
    })
    .unwrap();
    assert!(run_threads(0, |_c| Ok(())).is_err());
}

#[test]
fn ranks_may_use_rayon() {
    use rayon::prelude::*;
    let out = run_threads(3, |mut c| {
        let s: f64 = (0..10_000).into_par_iter().map(|i| i as f64).sum();
        let mut v = [s];
        c.allreduce_sum(&mut v)?;
        Ok(v[0])
    })
    .unwrap();
    assert!(out.iter().all(|&v| v == 3.0 * 49_995_000.0));
}
