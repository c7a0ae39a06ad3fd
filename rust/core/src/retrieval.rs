//! Exact top-k cosine retrieval (the similar users of every user), blocked so that memory stays
//! O(n·k + block) however many rows there are (the original LLM-ESR builds the full n×n matrix), with
//! query blocks spread over threads and each block's scores computed as one matrix product.

use crate::error::{Error, Result};
use crate::ingest::Progress;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use std::cmp::Ordering;

const QUERY_BLOCK: usize = 256;
const DB_BLOCK: usize = 2048;

/// Higher score first; equal scores: lower index first.
fn better(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal).then(a.1.cmp(&b.1))
}

/// Unit-norm copy of the rows; errors name the first bad row.
fn normalized(emb: &[f32], n: usize, dim: usize) -> Result<Vec<f32>> {
    let mut unit = emb.to_vec();
    for (i, row) in unit.chunks_exact_mut(dim).enumerate().take(n) {
        if row.iter().any(|x| !x.is_finite()) {
            return Err(Error::Input(format!("embedding row {i} has NaN or infinite values")));
        }
        let norm = row.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
        if norm == 0.0 {
            return Err(Error::Input(format!("embedding row {i} is all zeros (cosine similarity is undefined)")));
        }
        row.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    }
    Ok(unit)
}

/// Top-k rows (self excluded) for the query rows `q0..q0 + out.len() / k`, into `out`.
fn top_k_block(unit: &[f32], n: usize, dim: usize, k: usize, q0: usize, scores: &mut [f32], out: &mut [i32]) {
    let qn = out.len() / k;
    let mut cands: Vec<Vec<(f32, u32)>> = (0..qn).map(|_| Vec::with_capacity(4 * k + DB_BLOCK)).collect();
    let mut floor = vec![f32::NEG_INFINITY; qn];
    for d0 in (0..n).step_by(DB_BLOCK) {
        let dn = DB_BLOCK.min(n - d0);
        // scores[i][j] = <unit[q0 + i], unit[d0 + j]>
        // SAFETY: all pointers and strides describe in-bounds row-major blocks of `unit` and `scores`
        // (qn ≤ QUERY_BLOCK rows, dn ≤ DB_BLOCK columns, inner length dim).
        unsafe {
            gemm(
                qn,
                dn,
                dim,
                scores.as_mut_ptr(),
                1,
                dn as isize,
                false,
                unit.as_ptr().add(q0 * dim),
                1,
                dim as isize,
                unit.as_ptr().add(d0 * dim),
                dim as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
        for (i, cand) in cands.iter_mut().enumerate() {
            let q = q0 + i;
            for (j, &s) in scores[i * dn..(i + 1) * dn].iter().enumerate() {
                if s >= floor[i] && d0 + j != q {
                    cand.push((s, (d0 + j) as u32));
                }
            }
            if cand.len() >= 4 * k {
                cand.select_nth_unstable_by(k - 1, better);
                cand.truncate(k);
                floor[i] = cand.iter().map(|c| c.0).fold(f32::INFINITY, f32::min);
            }
        }
    }
    for (cand, dst) in cands.iter_mut().zip(out.chunks_exact_mut(k)) {
        cand.sort_unstable_by(better);
        for (d, c) in dst.iter_mut().zip(cand.iter()) {
            *d = c.1 as i32;
        }
    }
}

/// For every row of `emb` (`n` rows of `dim` floats, row-major), the indices of the `k` rows with
/// the highest cosine similarity, itself excluded, best first, ties broken by lower index.
pub fn similar(emb: &[f32], n: usize, dim: usize, k: usize, progress: Progress) -> Result<Vec<i32>> {
    if dim == 0 || emb.len() != n * dim {
        return Err(Error::Input(format!("embeddings: {} values do not make {n} rows of {dim}", emb.len())));
    }
    if k == 0 || k >= n {
        return Err(Error::Input(format!("k must be between 1 and the number of rows minus one ({}), not {k}", n - 1)));
    }
    if n > i32::MAX as usize {
        return Err(Error::Input("more than 2^31 rows".into()));
    }
    let unit = normalized(emb, n, dim)?;
    let mut out = vec![0i32; n * k];
    // Batches of query blocks run in parallel; progress is reported between batches, from this thread.
    let batch_rows = QUERY_BLOCK * 4 * rayon::current_num_threads().max(1);
    for (batch, out_batch) in out.chunks_mut(batch_rows * k).enumerate() {
        out_batch.par_chunks_mut(QUERY_BLOCK * k).enumerate().for_each_init(
            || vec![0f32; QUERY_BLOCK * DB_BLOCK],
            |scores, (b, out_block)| {
                let q0 = batch * batch_rows + b * QUERY_BLOCK;
                top_k_block(&unit, n, dim, k, q0, scores, out_block);
            },
        );
        let done = ((batch + 1) * batch_rows).min(n) as u64;
        if !progress("similar users", done, n as u64) {
            return Err(Error::Cancelled);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn brute(emb: &[f32], n: usize, dim: usize, k: usize) -> Vec<i32> {
        let unit = normalized(emb, n, dim).unwrap();
        let mut out = Vec::new();
        for q in 0..n {
            let mut c: Vec<(f32, u32)> = (0..n)
                .filter(|&j| j != q)
                .map(|j| {
                    let s = (0..dim).map(|t| unit[q * dim + t] * unit[j * dim + t]).sum::<f32>();
                    (s, j as u32)
                })
                .collect();
            c.sort_by(better);
            out.extend(c[..k].iter().map(|x| x.1 as i32));
        }
        out
    }

    #[test]
    fn matches_brute_force_across_blocks() {
        let mut r = Rng::new(5, 0);
        // Entries of +-1 in 4 dimensions: unit vectors and cosines are exact whatever the summation
        // order, and exactly equal cosines (ties) are everywhere.
        let (n, dim, k) = (2600, 4, 7);
        let emb: Vec<f32> = (0..n * dim).map(|_| if r.below(2) == 0 { -1.0 } else { 1.0 }).collect();
        let got = similar(&emb, n, dim, k, &mut |_, _, _| true).unwrap();
        let want = brute(&emb, n, dim, k);
        assert_eq!(got, want);
    }

    #[test]
    fn rejects_bad_input() {
        let mut ok = |_: &str, _: u64, _: u64| true;
        assert!(similar(&[1.0, f32::NAN, 1.0, 1.0], 2, 2, 1, &mut ok).unwrap_err().to_string().contains("row 0"));
        assert!(similar(&[1.0, 1.0, 0.0, 0.0], 2, 2, 1, &mut ok)
            .unwrap_err()
            .to_string()
            .contains("row 1 is all zeros"));
        assert!(similar(&[1.0, 1.0, 1.0, 0.0], 2, 2, 2, &mut ok).unwrap_err().to_string().contains("k must be"));
    }
}
