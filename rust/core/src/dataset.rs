//! From a raw log to a dataset: rating and date filters, stable chronological ordering, optional
//! removal of consecutive repeats, k-core filtering, id remapping (1..N, 0 = padding), CSR layout and
//! the leave-one-out split.

use crate::error::{Error, Result};
use crate::ingest::RawLog;
use crate::intern::{IdList, Interner};
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
    /// Raw ids by new id.
    pub user_ids: IdList,
    pub item_ids: IdList,
    pub report: FilterReport,
}

impl Dataset {
    pub fn n_users(&self) -> usize {
        self.user_ids.len()
    }
    pub fn n_items(&self) -> usize {
        self.item_ids.len()
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

/// Stable counting sort of the kept rows by `group(user)`: the destination of every row
/// (`u32::MAX` if dropped; written over `users`) and the start of every group. Histograms and fills
/// run in parallel chunks.
fn group_positions(
    mut users: Vec<u32>,
    group: impl Fn(u32) -> u32 + Sync,
    keep: &[bool],
    n_groups: usize,
) -> (Vec<u32>, Vec<usize>) {
    let chunk = users.len().div_ceil(rayon::current_num_threads().max(1)).max(1);
    let hist: Vec<Vec<u32>> = users
        .par_chunks(chunk)
        .zip(keep.par_chunks(chunk))
        .map(|(us, ks)| {
            let mut h = vec![0u32; n_groups];
            for (&u, &k) in us.iter().zip(ks) {
                if k {
                    h[group(u) as usize] += 1;
                }
            }
            h
        })
        .collect();
    let mut start = vec![0usize; n_groups + 1];
    let mut offsets = vec![vec![0u32; n_groups]; hist.len()];
    let mut next = 0usize;
    for g in 0..n_groups {
        start[g] = next;
        for (h, off) in hist.iter().zip(offsets.iter_mut()) {
            off[g] = next as u32;
            next += h[g] as usize;
        }
    }
    start[n_groups] = next;
    // The destinations overwrite the user column in place (no fresh memory for another column).
    users.par_chunks_mut(chunk).zip(keep.par_chunks(chunk)).zip(offsets.par_iter_mut()).for_each(|((us, ks), off)| {
        for (u, &k) in us.iter_mut().zip(ks) {
            *u = if k {
                let g = group(*u) as usize;
                off[g] += 1;
                off[g] - 1
            } else {
                u32::MAX
            };
        }
    });
    (users, start)
}

/// Moves every kept row's value to its destination, converted by `f`.
fn scatter<T: Copy, U: Copy + Default>(col: &[T], dest: &[u32], len: usize, f: impl Fn(T) -> U) -> Vec<U> {
    let mut out = vec![U::default(); len];
    scatter_into(col, dest, &mut out, f);
    out
}

fn scatter_into<T: Copy, U: Copy>(col: &[T], dest: &[u32], out: &mut [U], f: impl Fn(T) -> U) {
    for (&x, &d) in col.iter().zip(dest) {
        if d != u32::MAX {
            out[d as usize] = f(x);
        }
    }
}

#[derive(Default)]
struct SortScratch {
    order: Vec<(i64, u32)>,
    items: Vec<i32>,
    ratings: Vec<f32>,
}

impl SortScratch {
    /// Sorts one user's rows by time; ties keep input order (the index breaks them).
    fn sort_segment(&mut self, times: &mut [i64], items: &mut [i32], ratings: Option<&mut [f32]>) {
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

/// Clears `keep` for rows that repeat the user's previous item (in chronological order); returns
/// how many it cleared.
fn drop_consecutive_repeats(log: &RawLog, keep: &mut [bool]) -> u64 {
    let (dest, start) = group_positions(log.users.clone(), |u| u, keep, log.user_keys.len());
    let mut rows = vec![0u32; start[start.len() - 1]];
    for (r, &d) in dest.iter().enumerate() {
        if d != u32::MAX {
            rows[d as usize] = r as u32;
        }
    }
    if let Some(times) = &log.times {
        segments_mut(&mut rows, &start).into_par_iter().for_each(|seg| seg.sort_by_key(|&r| (times[r as usize], r)));
    }
    let mut removed = 0;
    for w in start.windows(2) {
        for p in w[0] + 1..w[1] {
            let (prev, row) = (rows[p - 1] as usize, rows[p] as usize);
            if log.items[row] == log.items[prev] {
                keep[row] = false;
                removed += 1;
            }
        }
    }
    removed
}

/// Interaction counts of every user and item code over the kept rows (users and items counted in
/// parallel).
fn count_kept(log: &RawLog, keep: &[bool]) -> (Vec<u32>, Vec<u32>) {
    let count = |codes: &[u32], n: usize| {
        let mut counts = vec![0u32; n];
        for (&c, &k) in codes.iter().zip(keep) {
            counts[c as usize] += u32::from(k);
        }
        counts
    };
    rayon::join(|| count(&log.users, log.user_keys.len()), || count(&log.items, log.item_keys.len()))
}

/// New ids 1..N for the codes with a positive count, in key order; 0 for the others.
fn renumber(order: &[u32], counts: &[u32]) -> (Vec<u32>, usize) {
    let mut new = vec![0u32; counts.len()];
    let mut next = 0u32;
    for &code in order {
        if counts[code as usize] > 0 {
            next += 1;
            new[code as usize] = next;
        }
    }
    (new, next as usize)
}

/// The raw ids of the surviving codes, by new id (`order` lists codes in id order).
fn id_names(keys: &Interner, order: &[u32], new: &[u32]) -> IdList {
    let mut out = IdList::new();
    for &code in order {
        if new[code as usize] > 0 {
            out.push_with(|text| keys.write_key(code, text));
        }
    }
    out
}

pub fn build(mut log: RawLog, filters: &Filters) -> Result<Dataset> {
    let n = log.len();
    check_filters(&log, filters)?;
    let mut report = FilterReport { input: n as u64, ..Default::default() };
    let mut keep = row_filters(&log, filters, &mut report);
    let (user_count, item_count) = k_core(&log, filters, &mut keep, &mut report);
    if user_count.iter().all(|&c| c == 0) {
        return Err(Error::Input(format!(
            "the filters left no interactions (of {n}: {} below --min-rating, {} outside the date window, {} repeats, {} by the {}-user/{}-item core)",
            report.by_rating, report.by_date, report.by_dedup, report.by_core, filters.min_user, filters.min_item
        )));
    }

    // New ids: surviving users and items in raw-id order, from 1.
    let (uorder, iorder) = rayon::join(|| log.user_keys.order(), || log.item_keys.order());
    let (new_user, n_users) = renumber(&uorder, &user_count);
    let (new_item, _) = renumber(&iorder, &item_count);
    let (user_ids, item_ids) =
        rayon::join(|| id_names(&log.user_keys, &uorder, &new_user), || id_names(&log.item_keys, &iorder, &new_item));

    let (start, items, times, ratings) = by_user_in_time_order(&mut log, keep, &new_user, &new_item, n_users);
    let mut indptr = vec![0i64; n_users + 2];
    for (u, &s) in start.iter().enumerate() {
        indptr[u + 1] = s as i64;
    }
    let (train_end, valid, test) = leave_one_out(&indptr, &items);
    Ok(Dataset { indptr, items, times, ratings, train_end, valid, test, user_ids, item_ids, report })
}

/// Refuses filters the input cannot serve (and inputs too large for 32-bit row numbers).
fn check_filters(log: &RawLog, filters: &Filters) -> Result<()> {
    if log.len() >= u32::MAX as usize {
        return Err(Error::Input("more than 4 billion interactions are not supported".into()));
    }
    if filters.min_rating.is_some() && log.ratings.is_none() {
        return Err(Error::Input("--min-rating needs ratings, and this input has none".into()));
    }
    if (filters.since.is_some() || filters.until.is_some()) && log.times.is_none() {
        return Err(Error::Input("a date window needs timestamps, and this input has none".into()));
    }
    Ok(())
}

/// Which rows pass the row filters: the rating floor, the date window, consecutive repeats.
fn row_filters(log: &RawLog, filters: &Filters, report: &mut FilterReport) -> Vec<bool> {
    let mut keep = vec![true; log.len()];
    if let (Some(min), Some(ratings)) = (filters.min_rating, &log.ratings) {
        for (k, &r) in keep.iter_mut().zip(ratings) {
            *k = r >= min;
        }
        report.by_rating = keep.iter().filter(|k| !**k).count() as u64;
    }
    if let Some(times) = &log.times {
        // No bound set keeps every timestamp (i64::MAX included).
        let in_window = |t: i64| filters.since.is_none_or(|s| t >= s) && filters.until.is_none_or(|u| t < u);
        for (k, &t) in keep.iter_mut().zip(times) {
            if *k && !in_window(t) {
                *k = false;
                report.by_date += 1;
            }
        }
    }
    if filters.dedup_consecutive {
        report.by_dedup = drop_consecutive_repeats(log, &mut keep);
    }
    keep
}

/// The k-core on interaction counts (repeats count), on the unordered rows (order does not matter):
/// rows of users or items below their minimum are dropped until none is (or once, single-pass).
/// Returns the kept rows' counts per raw user and item.
fn k_core(log: &RawLog, filters: &Filters, keep: &mut [bool], report: &mut FilterReport) -> (Vec<u32>, Vec<u32>) {
    let (mut user_count, mut item_count) = count_kept(log, keep);
    if filters.min_user <= 1 && filters.min_item <= 1 {
        return (user_count, item_count);
    }
    let n = log.len();
    loop {
        report.core_rounds += 1;
        let chunk = (1 << 16).max(n / (4 * rayon::current_num_threads().max(1)));
        let removed: u64 = keep
            .par_chunks_mut(chunk)
            .zip(log.users.par_chunks(chunk).zip(log.items.par_chunks(chunk)))
            .map(|(keep, (users, items))| {
                let mut removed = 0;
                for ((&u, &i), k) in users.iter().zip(items).zip(keep.iter_mut()) {
                    if *k && (user_count[u as usize] < filters.min_user || item_count[i as usize] < filters.min_item) {
                        *k = false;
                        removed += 1;
                    }
                }
                removed
            })
            .sum();
        report.by_core += removed;
        if removed == 0 {
            break;
        }
        (user_count, item_count) = count_kept(log, keep);
        if filters.core_mode == CoreMode::SinglePass {
            break;
        }
    }
    (user_count, item_count)
}

type Columns = (Vec<usize>, Vec<i32>, Option<Vec<i64>>, Option<Vec<f32>>);

/// The kept rows grouped by new user id (stable), each column moved straight to its final place, then
/// each user's rows ordered by time (ties keep input order): (each user's first row, items, times,
/// ratings). Takes the log's columns.
fn by_user_in_time_order(
    log: &mut RawLog,
    keep: Vec<bool>,
    new_user: &[u32],
    new_item: &[u32],
    n_users: usize,
) -> Columns {
    let (dest, start) = group_positions(std::mem::take(&mut log.users), |u| new_user[u as usize] - 1, &keep, n_users);
    drop(keep);
    let m = start[n_users];
    let raw_items = std::mem::take(&mut log.items);
    let (raw_times, raw_ratings) = (log.times.take(), log.ratings.take());
    // Two balanced halves: 8-byte times on one side, 4-byte items and ratings on the other.
    let ((mut items, mut ratings), mut times) = rayon::join(
        || {
            let items = scatter(&raw_items, &dest, m, |i| new_item[i as usize] as i32);
            // The raw item column is free now: the ratings land in its memory (no fresh pages), as
            // bits, converted in place (same size) afterwards.
            let ratings = raw_ratings.map(|r| {
                let mut buf = raw_items;
                scatter_into(&r, &dest, &mut buf[..m], f32::to_bits);
                buf.truncate(m);
                buf.into_iter().map(f32::from_bits).collect::<Vec<f32>>()
            });
            (items, ratings)
        },
        || raw_times.map(|t| scatter(&t, &dest, m, |x| x)),
    );
    drop(dest);
    if let Some(times) = &mut times {
        let rating_segs: Vec<Option<&mut [f32]>> = match &mut ratings {
            Some(r) => segments_mut(r, &start).into_iter().map(Some).collect(),
            None => (0..n_users).map(|_| None).collect(),
        };
        segments_mut(times, &start)
            .into_par_iter()
            .zip(segments_mut(&mut items, &start))
            .zip(rating_segs)
            .for_each_init(SortScratch::default, |scratch, ((t, i), r)| scratch.sort_segment(t, i, r));
    }
    (start, items, times, ratings)
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
    use crate::intern::TextInterner;

    fn log(rows: &[(&str, &str, i64)]) -> RawLog {
        let mut l = RawLog { times: Some(Vec::new()), ..Default::default() };
        for (u, i, t) in rows {
            let (mut ut, mut it) = (TextInterner::default(), TextInterner::default());
            let (ur, ir) = ([ut.raw_id(u.as_bytes())], [it.raw_id(i.as_bytes())]);
            l.user_keys.intern_rows(&ur, &ut, &mut l.users);
            l.item_keys.intern_rows(&ir, &it, &mut l.items);
            l.times.as_mut().unwrap().push(*t);
        }
        l
    }

    #[test]
    fn chronological_stable_and_remapped() {
        let l = log(&[("10", "b", 5), ("2", "a", 1), ("10", "a", 1), ("10", "c", 1), ("2", "c", 0)]);
        let d = build(l, &Filters::default()).unwrap();
        assert_eq!(d.user_ids.iter().collect::<Vec<_>>(), vec!["2", "10"]);
        assert_eq!(d.item_ids.iter().collect::<Vec<_>>(), vec!["a", "b", "c"]);
        assert_eq!(d.item_ids.get(3), "c");
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

    #[test]
    fn date_window_bounds() {
        let l = || log(&[("1", "a", i64::MIN), ("1", "b", 5), ("1", "c", i64::MAX)]);
        assert_eq!(build(l(), &Filters::default()).unwrap().items.len(), 3); // no window: all kept
        let d = build(l(), &Filters { since: Some(5), until: Some(i64::MAX), ..Default::default() }).unwrap();
        assert_eq!((d.items.len(), d.report.by_date), (1, 2)); // until is exclusive
    }
}
