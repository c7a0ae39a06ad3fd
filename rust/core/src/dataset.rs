//! From a raw log to a dataset: rating and date filters, stable chronological ordering, optional
//! removal of consecutive repeats, k-core filtering, id remapping (1..N, 0 = padding), CSR layout and
//! the leave-one-out split.

use crate::error::{Error, Result};
use crate::ingest::RawLog;
use crate::intern::key_ranks;
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

/// Stable counting sort of `rows` by `key[row]` (keys < `n_keys`); returns the rows and key offsets.
fn group_by(rows: &[u32], key: impl Fn(u32) -> u32, n_keys: usize) -> (Vec<u32>, Vec<usize>) {
    let mut start = vec![0usize; n_keys + 1];
    for &r in rows {
        start[key(r) as usize + 1] += 1;
    }
    for k in 0..n_keys {
        start[k + 1] += start[k];
    }
    let mut fill = start.clone();
    let mut out = vec![0u32; rows.len()];
    for &r in rows {
        let k = key(r) as usize;
        out[fill[k]] = r;
        fill[k] += 1;
    }
    (out, start)
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

pub fn build(log: RawLog, filters: &Filters) -> Result<Dataset> {
    let n = log.len();
    if n >= u32::MAX as usize {
        return Err(Error::Input(
            "more than 4 billion interactions are not supported".into(),
        ));
    }
    if filters.min_rating.is_some() && log.ratings.is_none() {
        return Err(Error::Input(
            "--min-rating needs ratings, and this input has none".into(),
        ));
    }
    if (filters.since.is_some() || filters.until.is_some()) && log.times.is_none() {
        return Err(Error::Input(
            "a date window needs timestamps, and this input has none".into(),
        ));
    }
    let mut report = FilterReport {
        input: n as u64,
        ..Default::default()
    };
    let (urank, irank) = rayon::join(
        || key_ranks(log.user_keys.keys()),
        || key_ranks(log.item_keys.keys()),
    );
    let user_of = |r: u32| urank[log.users[r as usize] as usize];
    let item_of = |r: u32| irank[log.items[r as usize] as usize];

    // Row filters.
    let mut rows: Vec<u32> = (0..n as u32).collect();
    if let (Some(min), Some(ratings)) = (filters.min_rating, &log.ratings) {
        rows.retain(|&r| ratings[r as usize] >= min);
        report.by_rating = n as u64 - rows.len() as u64;
    }
    if let Some(times) = &log.times {
        let before = rows.len();
        let (lo, hi) = (
            filters.since.unwrap_or(i64::MIN),
            filters.until.unwrap_or(i64::MAX),
        );
        rows.retain(|&r| (lo..hi).contains(&times[r as usize]));
        report.by_date = (before - rows.len()) as u64;
    }

    // Group by user (ranks follow raw-id order), then stable chronological order inside each user.
    let n_user_keys = log.user_keys.len();
    let (mut order, ustart) = group_by(&rows, user_of, n_user_keys);
    drop(rows);
    if let Some(times) = &log.times {
        segments_mut(&mut order, &ustart)
            .into_par_iter()
            .for_each(|seg| seg.sort_by_key(|&r| times[r as usize]));
    }
    if filters.dedup_consecutive {
        let before = order.len();
        let mut kept = Vec::with_capacity(order.len());
        for u in 0..n_user_keys {
            let mut prev = None;
            for &r in &order[ustart[u]..ustart[u + 1]] {
                let item = log.items[r as usize];
                if prev != Some(item) {
                    kept.push(r);
                }
                prev = Some(item);
            }
        }
        order = kept;
        report.by_dedup = (before - order.len()) as u64;
    }

    // k-core on interaction counts (repeats count as interactions).
    let n_item_keys = log.item_keys.len();
    let mut alive = vec![true; order.len()];
    let mut user_count = vec![0u32; n_user_keys];
    let mut item_count = vec![0u32; n_item_keys];
    let count = |alive: &[bool], user_count: &mut [u32], item_count: &mut [u32]| {
        user_count.fill(0);
        item_count.fill(0);
        for (p, &r) in order.iter().enumerate() {
            if alive[p] {
                user_count[user_of(r) as usize] += 1;
                item_count[item_of(r) as usize] += 1;
            }
        }
    };
    if filters.min_user > 1 || filters.min_item > 1 {
        loop {
            count(&alive, &mut user_count, &mut item_count);
            report.core_rounds += 1;
            let mut changed = false;
            for (p, &r) in order.iter().enumerate() {
                if alive[p]
                    && (user_count[user_of(r) as usize] < filters.min_user
                        || item_count[item_of(r) as usize] < filters.min_item)
                {
                    alive[p] = false;
                    changed = true;
                }
            }
            if !changed || filters.core_mode == CoreMode::SinglePass {
                break;
            }
        }
        report.by_core = alive.iter().filter(|a| !**a).count() as u64;
    }
    count(&alive, &mut user_count, &mut item_count);
    let kept: Vec<u32> = order
        .iter()
        .zip(&alive)
        .filter(|(_, a)| **a)
        .map(|(&r, _)| r)
        .collect();
    drop(order);
    if kept.is_empty() {
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
                if c > 0 {
                    next += 1;
                    next
                } else {
                    0
                }
            })
            .collect()
    };
    let (new_user_by_rank, new_item_by_rank) = (renumber(&user_count), renumber(&item_count));
    let names = |keys: &[Box<[u8]>], rank: &[u32], new_by_rank: &[u32]| -> Vec<String> {
        let n_new = new_by_rank.iter().copied().max().unwrap_or(0) as usize;
        let mut out = vec![String::new(); n_new + 1];
        for (code, key) in keys.iter().enumerate() {
            let new = new_by_rank[rank[code] as usize];
            if new > 0 {
                out[new as usize] = String::from_utf8_lossy(key).into_owned();
            }
        }
        out
    };
    let user_ids = names(log.user_keys.keys(), &urank, &new_user_by_rank);
    let item_ids = names(log.item_keys.keys(), &irank, &new_item_by_rank);
    let n_users = user_ids.len() - 1;

    let items: Vec<i32> = kept
        .iter()
        .map(|&r| new_item_by_rank[item_of(r) as usize] as i32)
        .collect();
    let times = log
        .times
        .as_ref()
        .map(|t| kept.iter().map(|&r| t[r as usize]).collect());
    let ratings = log
        .ratings
        .as_ref()
        .map(|t| kept.iter().map(|&r| t[r as usize]).collect());
    let mut indptr = vec![0i64; n_users + 2];
    for &r in &kept {
        indptr[new_user_by_rank[user_of(r) as usize] as usize + 1] += 1;
    }
    for u in 1..=n_users + 1 {
        indptr[u] += indptr[u - 1];
    }
    let (train_end, valid, test) = leave_one_out(&indptr, &items);
    Ok(Dataset {
        indptr,
        items,
        times,
        ratings,
        train_end,
        valid,
        test,
        user_ids,
        item_ids,
        report,
    })
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
        let mut l = RawLog {
            times: Some(Vec::new()),
            ..Default::default()
        };
        for (u, i, t) in rows {
            l.users.push(l.user_keys.intern(u.as_bytes()));
            l.items.push(l.item_keys.intern(i.as_bytes()));
            l.times.as_mut().unwrap().push(*t);
        }
        l
    }

    #[test]
    fn chronological_stable_and_remapped() {
        let l = log(&[
            ("10", "b", 5),
            ("2", "a", 1),
            ("10", "a", 1),
            ("10", "c", 1),
            ("2", "c", 0),
        ]);
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
        let l = || {
            log(&[
                ("1", "x", 0),
                ("1", "y", 1),
                ("2", "x", 0),
                ("2", "z", 1),
                ("3", "x", 0),
                ("3", "z", 1),
            ])
        };
        let f = Filters {
            min_user: 2,
            min_item: 2,
            ..Default::default()
        };
        let d = build(l(), &f).unwrap();
        assert_eq!(d.n_users(), 2);
        assert_eq!(d.report.by_core, 2);
        assert_eq!(d.report.core_rounds, 3);
        let f1 = Filters {
            core_mode: CoreMode::SinglePass,
            ..f.clone()
        };
        let d1 = build(l(), &f1).unwrap();
        assert_eq!(d1.items.len(), 5); // only y is removed; u1 keeps one interaction
        let none = Filters {
            min_user: 10,
            ..Default::default()
        };
        assert!(build(l(), &none)
            .unwrap_err()
            .to_string()
            .contains("left no interactions"));
    }

    #[test]
    fn dedup_consecutive_repeats() {
        let l = log(&[("1", "a", 0), ("1", "a", 1), ("1", "b", 2), ("1", "a", 3)]);
        let d = build(
            l,
            &Filters {
                dedup_consecutive: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(d.items, vec![1, 2, 1]);
        assert_eq!(d.report.by_dedup, 1);
    }
}
