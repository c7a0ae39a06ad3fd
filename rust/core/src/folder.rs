//! The prepared dataset folder (see the README's "Dataset folder" section):
//!
//! | file | content |
//! |---|---|
//! | `meta.json` | counts, filters, sources with BLAKE3, package version, format version |
//! | `indptr.npy` | int64 `[n_users + 2]`, CSR offsets; user `u`'s history is `items[indptr[u]:indptr[u+1]]` |
//! | `items.npy` | int32 `[n_interactions]`, item ids 1..n_items, oldest first within each user |
//! | `timestamps.npy`, `ratings.npy` | int64 Unix seconds / float32, aligned with `items.npy` (when the input has them) |
//! | `train_end.npy` | int64 `[n_users + 1]`, end of each user's training prefix |
//! | `valid.npy`, `test.npy` | int32 `[n_users + 1]`, leave-one-out targets, 0 = none |
//! | `user_ids.json`, `item_ids.json` | raw ids by new id (entry 0 is null: padding) |
//! | `items.jsonl` | one line per item id 1..n_items: raw id and text fields |

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::intern::IdList;
use crate::items::ItemMeta;
use crate::npy::{self, NpyElement};
use crate::reader::SourceInfo;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;

/// What meta.json records beyond the dataset itself.
pub struct Provenance {
    pub version: String,
    pub input_format: String,
    pub sources: Vec<SourceInfo>,
    pub item_sources: Vec<SourceInfo>,
    pub settings: Value,
    pub skipped_lines: u64,
    pub skipped_examples: Vec<String>,
}

fn create(dir: &Path, name: &str) -> Result<BufWriter<File>> {
    let p = dir.join(name);
    File::create(&p).map(|f| BufWriter::with_capacity(1 << 20, f)).map_err(|e| Error::io(p.display().to_string(), e))
}

fn write_npy<T: NpyElement>(dir: &Path, name: &str, data: &[T]) -> Result<()> {
    let w = create(dir, name)?;
    npy::write(w, data).map_err(|e| Error::io(dir.join(name).display().to_string(), e))
}

fn write_json(dir: &Path, name: &str, v: &Value) -> Result<()> {
    let mut w = create(dir, name)?;
    let io = |e: std::io::Error| Error::io(dir.join(name).display().to_string(), e);
    serde_json::to_writer_pretty(&mut w, v).map_err(|e| io(e.into()))?;
    w.write_all(b"\n").and_then(|_| w.flush()).map_err(io)
}

/// `[null, "id1", "id2", ...]`, streamed (millions of ids need no intermediate JSON tree).
fn write_id_list(dir: &Path, name: &str, ids: &IdList) -> Result<()> {
    let io = |e: std::io::Error| Error::io(dir.join(name).display().to_string(), e);
    let mut w = create(dir, name)?;
    w.write_all(b"[null").map_err(io)?;
    for id in ids.iter() {
        w.write_all(b",\n").map_err(io)?;
        serde_json::to_writer(&mut w, id).map_err(|e| io(e.into()))?;
    }
    w.write_all(b"]\n").and_then(|_| w.flush()).map_err(io)
}

fn write_items_jsonl(dir: &Path, ds: &Dataset, items_meta: &FxHashMap<String, ItemMeta>) -> Result<u64> {
    let io = |e: std::io::Error| Error::io(dir.join("items.jsonl").display().to_string(), e);
    let mut with_text = 0u64;
    let mut w = create(dir, "items.jsonl")?;
    for (id, raw) in (1..).zip(ds.item_ids.iter()) {
        let m = items_meta.get(raw);
        with_text += u64::from(m.is_some());
        let m = m.cloned().unwrap_or_default();
        let line = json!({"item_id": id, "raw_id": raw, "title": m.title, "brand": m.brand,
                          "categories": m.categories, "description": m.description, "price": m.price});
        serde_json::to_writer(&mut w, &line).map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(with_text)
}

/// Writes every file of the folder into `dir` (an empty temporary folder; the caller renames it into
/// place) and returns the content of meta.json.
pub fn write(dir: &Path, ds: &Dataset, items_meta: &FxHashMap<String, ItemMeta>, prov: Provenance) -> Result<Value> {
    // Independent files, written in parallel.
    type Job<'a> = Box<dyn FnOnce() -> Result<u64> + Send + 'a>;
    let mut jobs: Vec<Job> = vec![
        Box::new(|| write_npy(dir, "items.npy", &ds.items).map(|_| 0)),
        Box::new(|| {
            write_npy(dir, "indptr.npy", &ds.indptr)?;
            write_npy(dir, "train_end.npy", &ds.train_end)?;
            write_npy(dir, "valid.npy", &ds.valid)?;
            write_npy(dir, "test.npy", &ds.test).map(|_| 0)
        }),
        Box::new(|| write_id_list(dir, "user_ids.json", &ds.user_ids).map(|_| 0)),
        Box::new(|| write_id_list(dir, "item_ids.json", &ds.item_ids).map(|_| 0)),
        Box::new(|| write_items_jsonl(dir, ds, items_meta)),
    ];
    if let Some(t) = &ds.times {
        jobs.push(Box::new(move || write_npy(dir, "timestamps.npy", t).map(|_| 0)));
    }
    if let Some(r) = &ds.ratings {
        jobs.push(Box::new(move || write_npy(dir, "ratings.npy", r).map(|_| 0)));
    }
    let with_text: u64 = jobs.into_par_iter().map(|job| job()).collect::<Result<Vec<u64>>>()?.iter().sum();

    let meta = json!({
        "format": "llmesr-dataset",
        "format_version": FORMAT_VERSION,
        "llmesr_version": prov.version,
        "n_users": ds.n_users(),
        "n_items": ds.n_items(),
        "n_interactions": ds.items.len(),
        "has_timestamps": ds.times.is_some(),
        "has_ratings": ds.ratings.is_some(),
        "items_with_metadata": with_text,
        "input_format": prov.input_format,
        "sources": prov.sources,
        "item_sources": prov.item_sources,
        "settings": prov.settings,
        "removed": ds.report,
        "skipped_lines": prov.skipped_lines,
        "skipped_examples": prov.skipped_examples,
        "split": "leave-one-out: last item test, second-to-last validation; users with fewer than 3 interactions are train-only",
    });
    write_json(dir, "meta.json", &meta)?;
    Ok(meta)
}

/// The arrays of a loaded dataset folder, checked once at load: every later step (samplers, training,
/// llmesr-embed) indexes with them unchecked. `folder` names the files in the messages.
pub struct Arrays<'a> {
    pub indptr: &'a [i64],
    pub train_end: &'a [i64],
    pub items: &'a [i32],
    pub valid: &'a [i32],
    pub test: &'a [i32],
    pub n_items: usize,
}

impl Arrays<'_> {
    /// The first problem found, naming the file and the row: `indptr` non-decreasing from 0 to the
    /// number of interactions, every `train_end` inside its user's history, every item id (history,
    /// validation, test) in 1..=n_items (0 allowed for "no target").
    pub fn check(&self, folder: &str) -> Result<()> {
        let file = |name: &str| format!("{folder}/{name}");
        let n_users = self.train_end.len().saturating_sub(1);
        if self.indptr.len() != n_users + 2 || self.valid.len() != n_users + 1 || self.test.len() != n_users + 1 {
            return Err(Error::Input(format!(
                "{folder}: indptr.npy, train_end.npy, valid.npy and test.npy disagree on the number of users"
            )));
        }
        if self.indptr[0] != 0 {
            return Err(Error::Input(format!("{}: row 0 is {}, not 0", file("indptr.npy"), self.indptr[0])));
        }
        if let Some(u) = self.indptr.windows(2).position(|w| w[1] < w[0]) {
            return Err(Error::Input(format!(
                "{}: offsets decrease at row {} ({} after {})",
                file("indptr.npy"),
                u + 1,
                self.indptr[u + 1],
                self.indptr[u]
            )));
        }
        let end = *self.indptr.last().unwrap_or(&0);
        if end as usize != self.items.len() {
            return Err(Error::Input(format!(
                "{}: offsets end at {end}, but items.npy holds {} interactions",
                file("indptr.npy"),
                self.items.len()
            )));
        }
        if let Some(u) = (0..=n_users).find(|&u| !(self.indptr[u]..=self.indptr[u + 1]).contains(&self.train_end[u])) {
            return Err(Error::Input(format!(
                "{}: row {u} is {}, outside the user's history [{}, {}]",
                file("train_end.npy"),
                self.train_end[u],
                self.indptr[u],
                self.indptr[u + 1]
            )));
        }
        let outside = |&id: &i32| id < 1 || id as usize > self.n_items;
        if let Some(i) = self.items.par_iter().position_first(outside) {
            let user = self.indptr.partition_point(|&o| o <= i as i64) - 1;
            return Err(Error::Input(format!(
                "{}: entry {i} (user {user}) is item {}, outside 1..={}",
                file("items.npy"),
                self.items[i],
                self.n_items
            )));
        }
        for (name, targets) in [("valid.npy", self.valid), ("test.npy", self.test)] {
            if let Some(u) = targets.iter().position(|&id| id != 0 && outside(&id)) {
                return Err(Error::Input(format!(
                    "{}: row {u} is item {}, outside 1..={} (0 = none)",
                    file(name),
                    targets[u],
                    self.n_items
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Arrays;

    fn check(indptr: &[i64], train_end: &[i64], items: &[i32], valid: &[i32], test: &[i32]) -> String {
        let a = Arrays { indptr, train_end, items, valid, test, n_items: 3 };
        a.check("ds").err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn a_consistent_folder_passes() {
        assert_eq!(check(&[0, 0, 3, 5], &[0, 1, 4], &[1, 2, 3, 3, 1], &[0, 2, 0], &[0, 3, 1]), "");
    }

    #[test]
    fn each_inconsistency_names_its_file_and_row() {
        let msg = check(&[0, 0, 3, 2], &[0, 1, 2], &[1, 2, 3], &[0, 0, 0], &[0, 0, 0]);
        assert_eq!(msg, "ds/indptr.npy: offsets decrease at row 3 (2 after 3)");
        let msg = check(&[0, 0, 3, 5], &[0, 1, 6], &[1, 2, 3, 3, 1], &[0, 0, 0], &[0, 0, 0]);
        assert_eq!(msg, "ds/train_end.npy: row 2 is 6, outside the user's history [3, 5]");
        let msg = check(&[0, 0, 3, 5], &[0, 1, 4], &[1, 2, 3, 4, 1], &[0, 0, 0], &[0, 0, 0]);
        assert_eq!(msg, "ds/items.npy: entry 3 (user 2) is item 4, outside 1..=3");
        let msg = check(&[0, 0, 3, 5], &[0, 1, 4], &[1, 0, 3, 3, 1], &[0, 0, 0], &[0, 0, 0]);
        assert_eq!(msg, "ds/items.npy: entry 1 (user 1) is item 0, outside 1..=3");
        let msg = check(&[0, 0, 3, 5], &[0, 1, 4], &[1, 2, 3, 3, 1], &[0, 0, -1], &[0, 0, 0]);
        assert_eq!(msg, "ds/valid.npy: row 2 is item -1, outside 1..=3 (0 = none)");
        let msg = check(&[0, 0, 3, 4], &[0, 1, 4], &[1, 2, 3, 3, 1], &[0, 0, 0], &[0, 0, 0]);
        assert_eq!(msg, "ds/indptr.npy: offsets end at 4, but items.npy holds 5 interactions");
        let msg = check(&[1, 1, 3, 5], &[1, 1, 4], &[1, 2, 3, 3, 1], &[0, 0, 0], &[0, 0, 0]);
        assert_eq!(msg, "ds/indptr.npy: row 0 is 1, not 0");
    }
}
