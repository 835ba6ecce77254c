//! MPI self-test of `MpiComm`, run under `mpirun -n 4` by tests/comm_mpi.rs.
//!
//! `ptytile_comm_selftest [checks|fail-error|fail-panic|sum-bits|allreduce-silent]`:
//! `checks` (default) runs the same checks as tests/comm_threads.rs and prints `selftest ok`
//! on rank 0; `fail-error` makes rank 1 return an error (then `MPI_Abort`) while the others
//! block in a receive; `fail-panic` makes rank 1 panic instead; `sum-bits` prints on rank 0
//! the bits of `allreduce_sum` and `allreduce_max` of [`tree_input`] (tests/comm_mpi.rs
//! compares them with thread ranks); `allreduce-silent` makes the last rank skip an
//! all-reduce the others enter with a 0.5 s timeout.

use std::time::{Duration, Instant};

use ptytile::comm::*;
use ptytile::{Error, Result};

fn values(rank: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + rank * 104729) % 1000) as f32 * 0.001 + rank as f32)
        .collect()
}

fn sum_input(rank: usize) -> Vec<f64> {
    vec![
        1e16 * if rank % 2 == 0 { 1.0 } else { -1.0 },
        0.1 * (rank + 1) as f64,
        1.0 / (rank + 3) as f64,
        -0.0,
    ]
}

/// Per-rank values of very different magnitudes, so the sum depends on the order of
/// addition. The same formula as in tests/comm_mpi.rs and tests/comm_threads.rs.
fn tree_input(rank: usize, i: usize) -> f64 {
    let m = ((rank * 7919 + i * 104729) % 1000) as f64 - 499.5;
    m * 10f64.powi(((rank * 5 + i * 3) % 19) as i32 - 9) + 0.1 * (rank + 1) as f64
}

/// The documented all-reduce order: sum over ranks `a..b` = `sum(a..a+h) + sum(a+h..b)`,
/// h the largest power of two below `b − a`.
fn tree_sum(xs: &[f64]) -> f64 {
    if xs.len() == 1 {
        return xs[0];
    }
    let h = xs.len().next_power_of_two() / 2;
    tree_sum(&xs[..h]) + tree_sum(&xs[h..])
}

fn bits_hex(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{:016x}", x.to_bits()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ensure(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::new("selftest", format!("check failed: {what}")))
    }
}

fn checks(c: &mut MpiComm) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    // Ring exchange, 1 KiB and 16 MiB.
    for floats in [256usize, 4 << 20] {
        let t = Instant::now();
        c.isend((r + 1) % n, 7, f32s_to_bytes(&values(r, floats)))?;
        let got = bytes_to_f32s(&c.recv((r + n - 1) % n, 7)?)?;
        c.wait_sends()?;
        ensure(got == values((r + n - 1) % n, floats), "ring values")?;
        c.barrier()?;
        if r == 0 {
            println!("ring {} bytes: {:?}", floats * 4, t.elapsed());
        }
    }
    let s = c.stats();
    ensure(
        s.messages_sent == 2 && s.bytes_sent == 4 * (256 + (4 << 20)),
        "stats after ring",
    )?;
    // Out-of-order tags, including a send to self.
    let next = (r + 1) % n;
    for tag in [3u32, 1, 2, 1] {
        c.isend(next, tag, vec![tag as u8; tag as usize])?;
    }
    c.isend(r, 9, vec![42])?;
    let prev = (r + n - 1) % n;
    ensure(c.recv(r, 9)? == vec![42], "self send")?;
    ensure(c.recv(prev, 2)? == vec![2, 2], "tag 2")?;
    ensure(c.recv(prev, 1)? == vec![1], "tag 1 first")?;
    ensure(c.recv(prev, 3)? == vec![3, 3, 3], "tag 3")?;
    ensure(c.recv(prev, 1)? == vec![1], "tag 1 second")?;
    c.wait_sends()?;
    // Deterministic sum equal to the documented tree-order sum.
    let expect: Vec<f64> = (0..4)
        .map(|i| tree_sum(&(0..n).map(|q| sum_input(q)[i]).collect::<Vec<_>>()))
        .collect();
    let mut v = sum_input(r);
    c.allreduce_sum(&mut v)?;
    ensure(
        v.iter()
            .zip(&expect)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "allreduce_sum tree order",
    )?;
    let all = c.gather(bytemuck_bits(&v))?;
    if let Some(all) = &all {
        ensure(
            all.iter().all(|b| b == &all[0]),
            "allreduce_sum bit-identical on all ranks",
        )?;
    }
    // Large sum crossing the chunking of the reduction.
    let mut big: Vec<f64> = (0..(3 << 20)).map(|i| (i % 97) as f64 + r as f64).collect();
    c.allreduce_sum(&mut big)?;
    let ranks_sum = (n * (n - 1) / 2) as f64;
    ensure(
        big.iter()
            .enumerate()
            .all(|(i, &x)| x == n as f64 * (i % 97) as f64 + ranks_sum),
        "large allreduce_sum",
    )?;
    // Max with NaN propagation.
    let mut m = vec![r as f64, -(r as f64), if r == 2 { f64::NAN } else { 0.0 }];
    c.allreduce_max(&mut m)?;
    ensure(
        m[0] == (n - 1) as f64 && m[1] == 0.0 && m[2].is_nan(),
        "allreduce_max",
    )?;
    // Variable-size gather.
    let g = c.gather(vec![r as u8; r * 3])?;
    match g {
        Some(all) => ensure(
            all.iter()
                .enumerate()
                .all(|(q, b)| b == &vec![q as u8; q * 3]),
            "gather",
        )?,
        None => ensure(r != 0, "gather result only on rank 0")?,
    }
    // Timeout names the peer.
    c.set_timeout(Duration::from_millis(300));
    let e = c.recv(prev, 99).unwrap_err().to_string();
    ensure(
        e.contains(&format!("no message from rank {prev}")),
        "timeout message",
    )?;
    c.set_timeout(DEFAULT_TIMEOUT);
    c.barrier()?;
    Ok(())
}

/// Print (rank 0) the bits of the all-reduced sum and max of [`tree_input`], checking
/// that every rank got the same bits and the sum is the documented tree order.
fn sum_bits(c: &mut MpiComm) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    let mut s: Vec<f64> = (0..16).map(|i| tree_input(r, i)).collect();
    let mut m = s.clone();
    c.allreduce_sum(&mut s)?;
    c.allreduce_max(&mut m)?;
    let want: Vec<f64> = (0..16)
        .map(|i| tree_sum(&(0..n).map(|q| tree_input(q, i)).collect::<Vec<_>>()))
        .collect();
    ensure(bits_hex(&s) == bits_hex(&want), "allreduce_sum tree order")?;
    let line = format!("sum {}\nmax {}\n", bits_hex(&s), bits_hex(&m));
    if let Some(all) = c.gather(line.clone().into_bytes())? {
        ensure(
            all.iter().all(|b| b == line.as_bytes()),
            "all ranks got the same bits",
        )?;
        print!("{line}");
    }
    Ok(())
}

/// The last rank never enters the all-reduce; the others must fail within their 0.5 s
/// timeout with an error naming a peer rank, not hang.
fn allreduce_silent(c: &mut MpiComm) -> Result<()> {
    if c.rank() + 1 == c.size() {
        std::thread::sleep(Duration::from_secs(30));
        return Ok(());
    }
    c.set_timeout(Duration::from_millis(500));
    let mut v = [1.0];
    c.allreduce_sum(&mut v)
}

fn bytemuck_bits(v: &[f64]) -> Vec<u8> {
    f64s_to_bytes(v)
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "checks".into());
    let mut c = match MpiComm::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(ptytile::error::EXIT_USAGE);
        }
    };
    let result = match mode.as_str() {
        "checks" => checks(&mut c),
        "fail-error" | "fail-panic" => {
            if c.rank() == 1 {
                std::thread::sleep(Duration::from_millis(200));
                if mode == "fail-panic" {
                    panic!("deliberate panic on rank 1");
                }
                Err(Error::new("tile 3", "deliberate failure on rank 1"))
            } else {
                // Blocks: rank 1 never sends.
                c.recv(1, 5).map(|_| ())
            }
        }
        "sum-bits" => sum_bits(&mut c),
        "allreduce-silent" => allreduce_silent(&mut c),
        "launch-info" => {
            println!("rank {} of {}: {:?}", c.rank(), c.size(), launcher_env());
            Ok(())
        }
        other => Err(Error::new(
            "selftest mode",
            format!("unknown mode '{other}'"),
        )),
    };
    match result {
        Ok(()) => {
            if c.rank() == 0 {
                println!("selftest ok on {} ranks: {:?}", c.size(), c.stats());
            }
        }
        Err(e) => {
            eprintln!("error: rank {}: {e}", c.rank());
            c.abort(ptytile::error::EXIT_USAGE);
        }
    }
}
