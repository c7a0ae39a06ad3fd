//! Seeded sampling for training and evaluation: negatives a user never interacted with, and the
//! padded next-item training batches of SASRec-style models. Every row draws from its own stream
//! (seed, purpose, epoch, user), so results do not depend on thread count or batch composition.

use crate::error::{zeros, Error, Result};
use crate::rng::Rng;
use rayon::prelude::*;

/// Stream purposes, so evaluation and training never share random numbers.
const EVAL_STREAM: u64 = 0xE7A1;
const TRAIN_STREAM: u64 = 0x7A1E;

fn stream(seed: u64, purpose: u64, epoch: u64, user: usize) -> Rng {
    Rng::new(seed ^ purpose.rotate_left(48) ^ epoch.rotate_left(24), user as u64)
}

/// `count` distinct items in 1..=n_items outside `history` (sorted, deduplicated), or an error when
/// there are not enough.
fn draw_outside(history: &[i32], n_items: usize, count: usize, rng: &mut Rng, out: &mut Vec<i32>) -> bool {
    let free = n_items - history.len();
    if free < count {
        return false;
    }
    out.clear();
    if count * 4 < free {
        // Sparse: rejection sampling (expected < 4/3 draws per item).
        while out.len() < count {
            let item = 1 + rng.below(n_items) as i32;
            if history.binary_search(&item).is_err() && !out.contains(&item) {
                out.push(item);
            }
        }
    } else {
        // Dense: list the free items and take a partial shuffle.
        let mut pool: Vec<i32> = (1..=n_items as i32).filter(|i| history.binary_search(i).is_err()).collect();
        for k in 0..count {
            let j = k + rng.below(pool.len() - k);
            pool.swap(k, j);
        }
        out.extend_from_slice(&pool[..count]);
    }
    true
}

/// How training negatives are drawn: uniformly, or in proportion to a weight per item (given as
/// the cumulative weights of items 1..=n_items), always outside the user's training history.
#[derive(Clone, Copy)]
pub enum Negatives<'a> {
    Uniform,
    Weighted(&'a [f64]),
}

impl Negatives<'_> {
    fn check(&self, n_items: usize) -> Result<()> {
        match self {
            Negatives::Weighted(cum) if cum.len() != n_items || !cum.last().is_some_and(|&t| t > 0.0) => {
                Err(Error::Input(format!("negative weights: need {n_items} cumulative weights with a positive total")))
            }
            _ => Ok(()),
        }
    }

    /// One item outside `history`, or None when the user has interacted with every item.
    fn draw(&self, history: &[i32], n_items: usize, rng: &mut Rng, buf: &mut Vec<i32>) -> Option<i32> {
        if let Negatives::Weighted(cum) = self {
            for _ in 0..64 {
                let item = 1 + rng.pick_cumulative(cum) as i32;
                if history.binary_search(&item).is_err() {
                    return Some(item);
                }
            }
            // The history holds most of the weight: a uniform draw among the rest ends the search.
        }
        draw_outside(history, n_items, 1, rng, buf).then(|| buf[0])
    }
}

/// A dataset's interaction sequences (see the dataset folder format).
#[derive(Clone, Copy)]
pub struct Sequences<'a> {
    pub indptr: &'a [i64],
    pub train_end: &'a [i64],
    pub items: &'a [i32],
    pub n_items: usize,
}

impl Sequences<'_> {
    fn n_users(&self) -> usize {
        self.train_end.len().saturating_sub(1)
    }
    fn history(&self, u: usize) -> &[i32] {
        &self.items[self.indptr[u] as usize..self.indptr[u + 1] as usize]
    }
    fn train(&self, u: usize) -> &[i32] {
        &self.items[self.indptr[u] as usize..self.train_end[u] as usize]
    }
}

fn sorted_history(items: &[i32]) -> Vec<i32> {
    let mut h = items.to_vec();
    h.sort_unstable();
    h.dedup();
    h
}

/// For the sampled evaluation protocol: `n_neg` distinct items per user that the user never
/// interacted with (whole history, validation and test included). `[(n_users + 1) * n_neg]`, row 0
/// zeros. The same seed gives the same candidates, so every model is ranked against the same ones.
pub fn eval_negatives(seqs: Sequences, n_neg: usize, seed: u64) -> Result<Vec<i32>> {
    let n_users = seqs.n_users();
    if n_neg >= seqs.n_items {
        return Err(Error::Input(format!(
            "{n_neg} negatives per user of the sampled protocol: the catalogue has only {} items",
            seqs.n_items
        )));
    }
    let mut out = zeros::<i32>(n_users + 1, n_neg, "evaluation negatives")?;
    let short: Option<usize> = out
        .par_chunks_mut(n_neg.max(1))
        .enumerate()
        .skip(1)
        .map_init(Vec::new, |buf, (u, row)| {
            let history = sorted_history(seqs.history(u));
            let mut rng = stream(seed, EVAL_STREAM, 0, u);
            if !draw_outside(&history, seqs.n_items, n_neg, &mut rng, buf) {
                return Some(u);
            }
            row.copy_from_slice(buf);
            None
        })
        .find_first(|bad| bad.is_some())
        .flatten();
    match short {
        Some(u) => Err(Error::Input(format!("user {u} has interacted with too many items to draw {n_neg} negatives"))),
        None => Ok(out),
    }
}

/// A training batch: rows of `len` positions each, row-major.
#[derive(Debug)]
pub struct Batch {
    pub len: usize,
    pub inputs: Vec<i32>,
    pub targets: Vec<i32>,
    pub negatives: Vec<i32>,
}

/// One SASRec-style training batch: for each user, the training history without its last item as
/// the input and the history shifted by one as the targets, both keeping the last `len` positions and
/// left-padded with 0, and one negative per target position (an item the user never interacted
/// with in training). `len` is the longest input of the batch, at most `max_len` (no work on padding
/// beyond it).
pub fn sasrec_batch(
    seqs: Sequences,
    users: &[u32],
    max_len: usize,
    how: Negatives,
    seed: u64,
    epoch: u64,
) -> Result<Batch> {
    check_users(&seqs, users)?;
    how.check(seqs.n_items)?;
    let train = |u: u32| seqs.train(u as usize);
    let len = users.iter().map(|&u| train(u).len().saturating_sub(1)).max().unwrap_or(0).min(max_len).max(1);
    let mut inputs = vec![0i32; users.len() * len];
    let mut targets = vec![0i32; users.len() * len];
    let mut negatives = vec![0i32; users.len() * len];
    inputs
        .par_chunks_mut(len)
        .zip(targets.par_chunks_mut(len))
        .zip(negatives.par_chunks_mut(len))
        .zip(users.par_iter())
        .try_for_each_init(Vec::new, |buf, (((inp, tgt), neg), &u)| {
            let seq = train(u);
            if seq.len() < 2 {
                return Ok(()); // nothing to predict: an all-padding row
            }
            let take = (seq.len() - 1).min(len);
            let start = len - take;
            inp[start..].copy_from_slice(&seq[seq.len() - 1 - take..seq.len() - 1]);
            tgt[start..].copy_from_slice(&seq[seq.len() - take..]);
            let history = sorted_history(seq);
            let mut rng = stream(seed, TRAIN_STREAM, epoch, u as usize);
            // One negative per position, drawn independently (repeats across positions allowed).
            for slot in neg[start..].iter_mut() {
                *slot = how.draw(&history, seqs.n_items, &mut rng, buf).ok_or_else(|| no_negative(u))?;
            }
            Ok(())
        })?;
    Ok(Batch { len, inputs, targets, negatives })
}

fn no_negative(user: u32) -> Error {
    Error::Input(format!("user {user} has interacted with every item: no negative exists"))
}

fn check_users(seqs: &Sequences, users: &[u32]) -> Result<()> {
    let n_users = seqs.n_users();
    match users.iter().find(|&&u| u == 0 || u as usize > n_users) {
        Some(bad) => Err(Error::Input(format!("user {bad} is not in 1..={n_users}"))),
        None => Ok(()),
    }
}

/// Model inputs for `users`: each training history followed by its next `extra` items (1 gives
/// the test input: training history plus the validation item), keeping the last `max_len`,
/// left-padded with 0 to the longest row (at least 1 position). Row-major `[users.len(), len]`.
pub fn histories(seqs: Sequences, users: &[u32], extra: usize, max_len: usize) -> Result<(usize, Vec<i32>)> {
    check_users(&seqs, users)?;
    let row = |u: u32| {
        let end = (seqs.train_end[u as usize] as usize + extra).min(seqs.indptr[u as usize + 1] as usize);
        &seqs.items[seqs.indptr[u as usize] as usize..end]
    };
    let len = users.iter().map(|&u| row(u).len()).max().unwrap_or(0).min(max_len).max(1);
    let mut out = vec![0i32; users.len() * len];
    out.par_chunks_mut(len).zip(users.par_iter()).for_each(|(dst, &u)| {
        let seq = row(u);
        let take = seq.len().min(len);
        dst[len - take..].copy_from_slice(&seq[seq.len() - take..]);
    });
    Ok((len, out))
}

/// One Bert4Rec training batch: each user's training history (last `max_len` items, left-padded)
/// with every item replaced by `n_items + 1` (the mask token) with probability `mask_prob`, at least
/// one per row (the last item when the draw masked none); `targets` holds the masked items (0
/// elsewhere) and `negatives` one item outside the training history per masked position.
pub fn bert4rec_batch(
    seqs: Sequences,
    users: &[u32],
    max_len: usize,
    mask_prob: f64,
    how: Negatives,
    seed: u64,
    epoch: u64,
) -> Result<Batch> {
    how.check(seqs.n_items)?;
    if !(0.0..=1.0).contains(&mask_prob) {
        return Err(Error::Input(format!("mask_prob must be in [0, 1], not {mask_prob}")));
    }
    let mask_token = seqs.n_items as i32 + 1;
    let (len, mut inputs) = histories(seqs, users, 0, max_len)?; // checks the users
    let mut targets = vec![0i32; inputs.len()];
    let mut negatives = vec![0i32; inputs.len()];
    inputs
        .par_chunks_mut(len)
        .zip(targets.par_chunks_mut(len))
        .zip(negatives.par_chunks_mut(len))
        .zip(users.par_iter())
        .try_for_each_init(Vec::new, |buf, (((inp, tgt), neg), &u)| {
            let history = sorted_history(seqs.train(u as usize));
            let mut rng = stream(seed, TRAIN_STREAM, epoch, u as usize);
            let first = inp.iter().position(|&x| x != 0).unwrap_or(len);
            for i in first..len {
                if rng.uniform() < mask_prob {
                    tgt[i] = inp[i];
                }
            }
            if first < len && tgt[first..].iter().all(|&t| t == 0) {
                tgt[len - 1] = inp[len - 1];
            }
            for i in first..len {
                if tgt[i] != 0 {
                    inp[i] = mask_token;
                    neg[i] = how.draw(&history, seqs.n_items, &mut rng, buf).ok_or_else(|| no_negative(u))?;
                }
            }
            Ok(())
        })?;
    Ok(Batch { len, inputs, targets, negatives })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eval_negatives_are_outside_history_distinct_and_seeded() {
        let indptr = [0i64, 0, 3, 5, 105];
        let mut items = vec![1, 2, 3, 4, 4];
        items.extend(1..=100); // user 3 touched items 1..=100 of 110: the dense path
        let train_end = [0i64, 3, 5, 105];
        let seqs = Sequences { indptr: &indptr, train_end: &train_end, items: &items, n_items: 110 };
        let a = eval_negatives(seqs, 8, 7).unwrap();
        assert_eq!(a, eval_negatives(seqs, 8, 7).unwrap());
        assert_ne!(a, eval_negatives(seqs, 8, 8).unwrap());
        assert!(a[..8].iter().all(|&x| x == 0));
        for u in 1..4 {
            let row = &a[u * 8..(u + 1) * 8];
            let hist = &items[indptr[u] as usize..indptr[u + 1] as usize];
            assert!(row.iter().all(|x| !hist.contains(x) && (1..=110).contains(x)));
            let mut d = row.to_vec();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 8);
        }
        assert!(eval_negatives(seqs, 11, 7).unwrap_err().to_string().contains("user 3"));
    }

    /// user 1: 1 2 3 4 5 (train 1 2 3), user 2: 6 7 (train 6 7), user 3: 8 9 10 (train 8)
    fn three_users() -> Sequences<'static> {
        Sequences {
            indptr: &[0, 0, 5, 7, 10],
            train_end: &[0, 3, 7, 8],
            items: &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            n_items: 20,
        }
    }

    #[test]
    fn sasrec_batch_shapes_and_padding() {
        let seqs = three_users();
        let Batch { len, inputs: inp, targets: tgt, negatives: neg } =
            sasrec_batch(seqs, &[1, 2, 3], 50, Negatives::Uniform, 1, 0).unwrap();
        assert_eq!(len, 2);
        assert_eq!(inp, vec![1, 2, 0, 6, 0, 0]);
        assert_eq!(tgt, vec![2, 3, 0, 7, 0, 0]);
        assert!(neg[..2].iter().all(|x| ![1, 2, 3].contains(x) && *x >= 1));
        assert_eq!(neg[2], 0);
        assert!(neg[3] != 6 && neg[3] != 7 && neg[3] >= 1);
        assert_eq!(&neg[4..], &[0, 0]);
        let b = sasrec_batch(seqs, &[1], 1, Negatives::Uniform, 1, 0).unwrap();
        let (len, inp) = (b.len, b.inputs);
        assert_eq!((len, inp), (1, vec![2])); // max_len keeps the most recent positions
        assert!(sasrec_batch(seqs, &[4], 5, Negatives::Uniform, 1, 0).is_err());
    }

    #[test]
    fn histories_and_bert4rec_masks() {
        let seqs = three_users();
        assert_eq!(histories(seqs, &[1, 3], 0, 9).unwrap(), (3, vec![1, 2, 3, 0, 0, 8]));
        assert_eq!(histories(seqs, &[1, 3], 1, 2).unwrap(), (2, vec![3, 4, 8, 9]));
        assert_eq!(histories(seqs, &[2], 1, 9).unwrap(), (2, vec![6, 7])); // no item after the history
        assert!(histories(seqs, &[0], 0, 9).is_err());

        let b = bert4rec_batch(seqs, &[1, 2, 3], 50, 0.0, Negatives::Uniform, 1, 0).unwrap();
        assert_eq!(b.len, 3);
        // mask_prob 0 still masks the last item of every row
        assert_eq!(b.inputs, vec![1, 2, 21, 0, 6, 21, 0, 0, 21]);
        assert_eq!(b.targets, vec![0, 0, 3, 0, 0, 7, 0, 0, 8]);
        let masked: Vec<bool> = b.targets.iter().map(|&t| t != 0).collect();
        for (i, &n) in b.negatives.iter().enumerate() {
            assert_eq!(n != 0, masked[i]);
        }
        let all = bert4rec_batch(seqs, &[1, 2, 3], 50, 1.0, Negatives::Uniform, 1, 0).unwrap();
        assert_eq!(all.inputs, vec![21, 21, 21, 0, 21, 21, 0, 0, 21]);
        assert_eq!(all.targets, vec![1, 2, 3, 0, 6, 7, 0, 0, 8]);
        assert!(bert4rec_batch(seqs, &[1], 50, 1.5, Negatives::Uniform, 1, 0).is_err());
    }

    #[test]
    fn weighted_negatives_follow_the_weights_and_avoid_the_history() {
        let indptr = [0i64, 0, 3];
        let train_end = [0i64, 3];
        let items = [1, 2, 3];
        let seqs = Sequences { indptr: &indptr, train_end: &train_end, items: &items, n_items: 6 };
        // Items 4..=6 weigh 1, 0, 9; items 1..=3 (the history) weigh 1 each and are never drawn.
        let cum = [1.0, 2.0, 3.0, 4.0, 4.0, 13.0];
        // Both batch kinds draw from the configured distribution (Bert4Rec once drew uniformly).
        for kind in ["sasrec", "bert4rec"] {
            let mut counts = [0usize; 7];
            for epoch in 0..300 {
                let b = match kind {
                    "sasrec" => sasrec_batch(seqs, &[1], 50, Negatives::Weighted(&cum), 3, epoch),
                    _ => bert4rec_batch(seqs, &[1], 50, 0.6, Negatives::Weighted(&cum), 3, epoch),
                }
                .unwrap();
                for &n in b.negatives.iter().filter(|&&n| n != 0) {
                    counts[n as usize] += 1;
                }
            }
            assert_eq!(&counts[..4], &[0, 0, 0, 0], "{kind}");
            assert_eq!(counts[5], 0, "{kind}");
            assert!(counts[6] > 5 * counts[4] && counts[4] > 0, "{kind}: {counts:?}");
        }
        assert!(sasrec_batch(seqs, &[1], 50, Negatives::Weighted(&cum[..5]), 3, 0).is_err());
        assert!(bert4rec_batch(seqs, &[1], 50, 0.6, Negatives::Weighted(&cum[..5]), 3, 0).is_err());
    }
}
