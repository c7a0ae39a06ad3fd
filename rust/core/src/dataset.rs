//! From a raw log to a dataset: rating and date filters, stable chronological ordering, optional
//! removal of consecutive repeats, k-core filtering, id remapping (1..N, 0 = padding), CSR layout and
//! the leave-one-out split.

use crate::error::{Error, Result};
use crate::ingest::RawLog;
use crate::intern::{key_ranks, Key};
use rayon::prelude::*;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoreMode {
    /// Repeat until every user and item meets its minimum (the usual k-core).
    Iterative,
    /// One round on the initial counts, as the original LLM-ESR preprocessing does.
    SinglePass,
}

#[derive(Clone, Debug, Serialize)]
pub struct Filters {
    pub min_rating: Option<f32>,
    /// Keep interactions with `since <= time < until` (Unix seconds).
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub min_user: u32,
    pub min_item: u32,
    pub core_mode: CoreMode,
    pub dedup_consecutive: bool,
}

impl Default for Filters {
    fn default() -> Self {
        Filters {
            min_rating: None,
            since: None,
            until: None,
            min_user: 0,
            min_item: 0,
            core_mode: CoreMode::Iterative,
            dedup_consecutive: false,
        }
    }
}

/// How many interactions each step removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FilterReport {
    pub input: u64,
    pub by_rating: u64,
    pub by_date: u64,
    pub by_dedup: u64,
    pub by_core: u64,
    pub core_rounds: u32,
}

/// The prepared dataset in memory. Users and items are numbered from 1; index 0 is padding.
#[derive(Debug)]
pub struct Dataset {
    /// `n_users + 2` offsets: user `u`'s history is `items[indptr[u]..indptr[u + 1]]`, oldest first.
    pub indptr: Vec<i64>,
    pub items: Vec<i32>,
    pub times: Option<Vec<i64>>,
    pub ratings: Option<Vec<f32>>,
    /// `n_users + 1`: user `u`'s training history is `items[indptr[u]..train_end[u]]`.
    pub train_end: Vec<i64>,
    /// `n_users + 1`: validation and test item of each user, 0 where the user has fewer than 3 items.
    pub valid: Vec<i32>,
    pub test: Vec<i32>,
    /// Raw ids; entry 0 is the padding slot (empty string).
    pub user_ids: Vec<String>,
    pub item_ids: Vec<String>,
    pub report: FilterReport,
}

impl Dataset {
    pub fn n_users(&self) -> usize {
        self.user_ids.len() - 1
    }
    pub fn n_items(&self) -> usize {
        self.item_ids.len() - 1
    }
}

/// Splits `data` into the mutable segments given by `offsets` (ascending, covering `data`).
fn segments_mut<'a, T>(mut data: &'a mut [T], offsets: &[usize]) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        let (head, tail) = data.split_at_mut(w[1] - w[0]);
        out.push(head);
        data = tail;
    }
    out
}

/// Keeps the entries whose `alive` flag is set, in place and in order.
fn compact<T: Copy>(col: &mut Vec<T>, alive: &[bool]) {
    let mut w = 0;
    for p in 0..col.len() {
        if alive[p] {
            col[w] = col[p];
            w += 1;
        }
    }
    col.truncate(w);
}

/// Stable counting sort of the kept rows by user: the destination of every row (`u32::MAX` if
/// dropped) and the start of every user's segment. Histograms and fills run in parallel chunks.
fn group_positions(users: &[u32], keep: &[bool], n_keys: usize) -> (Vec<u32>, Vec<usize>) {
    let chunk = users.len().div_ceil(rayon::current_num_threads().max(1)).max(1);
    let hist: Vec<Vec<u32>> = users
        .par_chunks(chunk)
        .zip(keep.par_chunks(chunk))
        .map(|(us, ks)| {
            let mut h = vec![0u32; n_keys];
            for (&u, &k) in us.iter().zip(ks) {
                h[u as usize] += u32::from(k);
            }
            h
        })
        .collect();
    let mut ustart = vec![0usize; n_keys + 1];
    let mut offsets = vec![vec![0u32; n_keys]; hist.len()];
    let mut next = 0usize;
    for u in 0..n_keys {
        ustart[u] = next;
        for (h, off) in hist.iter().zip(offsets.iter_mut()) {
            off[u] = next as u32;
            next += h[u] as usize;
        }
    }
    ustart[n_keys] = next;
    let mut dest = vec![u32::MAX; users.len()];
    dest.par_chunks_mut(chunk)
        .zip(users.par_chunks(chunk))
        .zip(keep.par_chunks(chunk))
        .zip(offsets.par_iter_mut())
        .for_each(|(((d, us), ks), off)| {
            for ((d, &u), &k) in d.iter_mut().zip(us).zip(ks) {
                if k {
                    *d = off[u as usize];
                    off[u as usize] += 1;
                }
            }
        });
    (dest, ustart)
}

fn scatter<T: Copy + Default>(col: Vec<T>, dest: &[u32], len: usize) -> Vec<T> {
    let mut out = vec![T::default(); len];
    for (&x, &d) in col.iter().zip(dest) {
        if d != u32::MAX {
            out[d as usize] = x;
        }
    }
    out
}

#[derive(Default)]
struct SortScratch {
    order: Vec<(i64, u32)>,
    items: Vec<u32>,
    ratings: Vec<f32>,
}

impl SortScratch {
    /// Sorts one user's rows by time; ties keep input order (the index breaks them).
    fn sort_segment(&mut self, times: &mut [i64], items: &mut [u32], ratings: Option<&mut [f32]>) {
        if times.is_sorted() {
            return;
        }
        self.order.clear();
        self.order.extend(times.iter().copied().zip(0u32..));
        self.order.sort_unstable();
        self.items.clear();
        self.items.extend_from_slice(items);
        for (k, &(t, src)) in self.order.iter().enumerate() {
            times[k] = t;
            items[k] = self.items[src as usize];
        }
        if let Some(r) = ratings {
            self.ratings.clear();
            self.ratings.extend_from_slice(r);
            for (k, &(_, src)) in self.order.iter().enumerate() {
                r[k] = self.ratings[src as usize];
            }
        }
    }
}

pub fn build(mut log: RawLog, filters: &Filters) -> Result<Dataset> {
    let n = log.len();
    if n >= u32::MAX as usize {
        return Err(Error::Input("more than 4 billion interactions are not supported".into()));
    }
    if filters.min_rating.is_some() && log.ratings.is_none() {
        return Err(Error::Input("--min-rating needs ratings, and this input has none".into()));
    }
    if (filters.since.is_some() || filters.until.is_some()) && log.times.is_none() {
        return Err(Error::Input("a date window needs timestamps, and this input has none".into()));
    }
    let mut report = FilterReport { input: n as u64, ..Default::default() };

    // Relabel ids by their rank in raw-id order, so that every later order is the final one.
    let (urank, irank) = rayon::join(|| key_ranks(log.user_keys.keys()), || key_ranks(log.item_keys.keys()));
    let (n_user_keys, n_item_keys) = (urank.len(), irank.len());
    rayon::join(
        || log.users.par_iter_mut().for_each(|u| *u = urank[*u as usize]),
        || log.items.par_iter_mut().for_each(|i| *i = irank[*i as usize]),
    );

    // Row filters, then a stable counting sort of the kept rows by user.
    let min_rating = filters.min_rating.unwrap_or(f32::NEG_INFINITY);
    let window = filters.since.unwrap_or(i64::MIN)..filters.until.unwrap_or(i64::MAX);
    let mut keep = vec![true; n];
    if let Some(ratings) = &log.ratings {
        for (k, &r) in keep.iter_mut().zip(ratings) {
            *k = r >= min_rating;
        }
        report.by_rating = keep.iter().filter(|k| !**k).count() as u64;
    }
    if let Some(times) = &log.times {
        for (k, t) in keep.iter_mut().zip(times) {
            if *k && !window.contains(t) {
                *k = false;
                report.by_date += 1;
            }
        }
    }
    let (dest, ustart) = group_positions(&log.users, &keep, n_user_keys);
    drop((keep, std::mem::take(&mut log.users)));

    // Columns in grouped order (each raw column freed once moved), then each user's rows by time.
    let kept = ustart[n_user_keys];
    let raw_items = std::mem::take(&mut log.items);
    let (raw_times, raw_ratings) = (log.times.take(), log.ratings.take());
    let ((mut items, mut times), mut ratings) = rayon::join(
        || rayon::join(|| scatter(raw_items, &dest, kept), || raw_times.map(|t| scatter(t, &dest, kept))),
        || raw_ratings.map(|r| scatter(r, &dest, kept)),
    );
    drop(dest);
    if let Some(times) = &mut times {
        let n_seg = ustart.len() - 1;
        let rating_segs: Vec<Option<&mut [f32]>> = match &mut ratings {
            Some(r) => segments_mut(r, &ustart).into_iter().map(Some).collect(),
            None => (0..n_seg).map(|_| None).collect(),
        };
        segments_mut(times, &ustart)
            .into_par_iter()
            .zip(segments_mut(&mut items, &ustart))
            .zip(rating_segs)
            .for_each_init(SortScratch::default, |scratch, ((t, i), r)| scratch.sort_segment(t, i, r));
    }
    let m = items.len();
    let items = items;

    let mut alive = vec![true; m];
    if filters.dedup_consecutive {
        for w in ustart.windows(2) {
            for p in w[0] + 1..w[1] {
                if items[p] == items[p - 1] {
                    alive[p] = false;
                    report.by_dedup += 1;
                }
            }
        }
    }

    // k-core on interaction counts (repeats count as interactions).
    let mut user_count = vec![0u32; n_user_keys];
    let mut item_count = vec![0u32; n_item_keys];
    let count = |alive: &[bool], user_count: &mut [u32], item_count: &mut [u32]| {
        item_count.fill(0);
        for (u, w) in ustart.windows(2).enumerate() {
            let mut c = 0;
            for p in w[0]..w[1] {
                if alive[p] {
                    c += 1;
                    item_count[items[p] as usize] += 1;
                }
            }
            user_count[u] = c;
        }
    };
    if filters.min_user > 1 || filters.min_item > 1 {
        loop {
            count(&alive, &mut user_count, &mut item_count);
            report.core_rounds += 1;
            let mut changed = false;
            for (u, w) in ustart.windows(2).enumerate() {
                let user_short = user_count[u] < filters.min_user;
                for p in w[0]..w[1] {
                    if alive[p] && (user_short || item_count[items[p] as usize] < filters.min_item) {
                        alive[p] = false;
                        report.by_core += 1;
                        changed = true;
                    }
                }
            }
            if !changed || filters.core_mode == CoreMode::SinglePass {
                break;
            }
        }
    }
    count(&alive, &mut user_count, &mut item_count);
    if !alive.iter().any(|a| *a) {
        return Err(Error::Input(format!(
            "the filters left no interactions (of {n}: {} below --min-rating, {} outside the date window, {} repeats, {} by the {}-user/{}-item core)",
            report.by_rating, report.by_date, report.by_dedup, report.by_core, filters.min_user, filters.min_item
        )));
    }

    // New ids: surviving users and items in raw-id order, from 1.
    let renumber = |counts: &[u32]| -> Vec<u32> {
        let mut next = 0u32;
        counts
            .iter()
            .map(|&c| {
                next += u32::from(c > 0);
                if c > 0 {
                    next
                } else {
                    0
                }
            })
            .collect()
    };
    let (new_user_by_rank, new_item_by_rank) = (renumber(&user_count), renumber(&item_count));
    let names = |keys: &[Key], rank: &[u32], new_by_rank: &[u32]| -> Vec<String> {
        let n_new = new_by_rank.iter().copied().max().unwrap_or(0) as usize;
        let mut out = vec![String::new(); n_new + 1];
        for (code, key) in keys.iter().enumerate() {
            let new = new_by_rank[rank[code] as usize];
            if new > 0 {
                out[new as usize] = key.to_text();
            }
        }
        out
    };
    let user_ids = names(log.user_keys.keys(), &urank, &new_user_by_rank);
    let item_ids = names(log.item_keys.keys(), &irank, &new_item_by_rank);
    let n_users = user_ids.len() - 1;

    let (items, (times, ratings)) = rayon::join(
        || {
            let mut items = items;
            compact(&mut items, &alive);
            items.iter().map(|&i| new_item_by_rank[i as usize] as i32).collect::<Vec<i32>>()
        },
        || {
            rayon::join(
                || {
                    times.map(|mut t| {
                        compact(&mut t, &alive);
                        t
                    })
                },
                || {
                    ratings.map(|mut r| {
                        compact(&mut r, &alive);
                        r
                    })
                },
            )
        },
    );
    let mut indptr = vec![0i64; n_users + 2];
    for (&c, &new) in user_count.iter().zip(&new_user_by_rank) {
        if new > 0 {
            indptr[new as usize + 1] = c as i64;
        }
    }
    for u in 1..=n_users + 1 {
        indptr[u] += indptr[u - 1];
    }
    let (train_end, valid, test) = leave_one_out(&indptr, &items);
    Ok(Dataset { indptr, items, times, ratings, train_end, valid, test, user_ids, item_ids, report })
}

/// Last item for test, second-to-last for validation, the rest for training; users with fewer than
/// three interactions keep everything for training (valid = test = 0).
pub fn leave_one_out(indptr: &[i64], items: &[i32]) -> (Vec<i64>, Vec<i32>, Vec<i32>) {
    let n_users = indptr.len() - 2;
    let mut train_end = vec![0i64; n_users + 1];
    let mut valid = vec![0i32; n_users + 1];
    let mut test = vec![0i32; n_users + 1];
    for u in 1..=n_users {
        let (s, e) = (indptr[u], indptr[u + 1]);
        if e - s >= 3 {
            train_end[u] = e - 2;
            valid[u] = items[(e - 2) as usize];
            test[u] = items[(e - 1) as usize];
        } else {
            train_end[u] = e;
        }
    }
    (train_end, valid, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(rows: &[(&str, &str, i64)]) -> RawLog {
        let mut l = RawLog { times: Some(Vec::new()), ..Default::default() };
        for (u, i, t) in rows {
            l.users.push(l.user_keys.intern(&Key::new(u.as_bytes().into())));
            l.items.push(l.item_keys.intern(&Key::new(i.as_bytes().into())));
            l.times.as_mut().unwrap().push(*t);
        }
        l
    }

    #[test]
    fn chronological_stable_and_remapped() {
        let l = log(&[("10", "b", 5), ("2", "a", 1), ("10", "a", 1), ("10", "c", 1), ("2", "c", 0)]);
        let d = build(l, &Filters::default()).unwrap();
        assert_eq!(d.user_ids, vec!["", "2", "10"]);
        assert_eq!(d.item_ids, vec!["", "a", "b", "c"]);
        assert_eq!(d.indptr, vec![0, 0, 2, 5]);
        // user "2": c@0, a@1; user "10": a@1, c@1 (tie keeps input order), b@5
        assert_eq!(d.items, vec![3, 1, 1, 3, 2]);
        assert_eq!((d.valid[2], d.test[2], d.train_end[2]), (3, 2, 3));
        assert_eq!((d.valid[1], d.test[1], d.train_end[1]), (0, 0, 2));
    }

    #[test]
    fn kcore_iterates_and_single_pass_does_not() {
        // u1 has 2 items, one of them only seen by u1; removing it drops u1 below 2, which drops item x.
        let l = || log(&[("1", "x", 0), ("1", "y", 1), ("2", "x", 0), ("2", "z", 1), ("3", "x", 0), ("3", "z", 1)]);
        let f = Filters { min_user: 2, min_item: 2, ..Default::default() };
        let d = build(l(), &f).unwrap();
        assert_eq!(d.n_users(), 2);
        assert_eq!(d.report.by_core, 2);
        assert_eq!(d.report.core_rounds, 3);
        let f1 = Filters { core_mode: CoreMode::SinglePass, ..f.clone() };
        let d1 = build(l(), &f1).unwrap();
        assert_eq!(d1.items.len(), 5); // only y is removed; u1 keeps one interaction
        let none = Filters { min_user: 10, ..Default::default() };
        assert!(build(l(), &none).unwrap_err().to_string().contains("left no interactions"));
    }

    #[test]
    fn dedup_consecutive_repeats() {
        let l = log(&[("1", "a", 0), ("1", "a", 1), ("1", "b", 2), ("1", "a", 3)]);
        let d = build(l, &Filters { dedup_consecutive: true, ..Default::default() }).unwrap();
        assert_eq!(d.items, vec![1, 2, 1]);
        assert_eq!(d.report.by_dedup, 1);
    }
}
